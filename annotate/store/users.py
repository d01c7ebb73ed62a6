"""Users and roles. Passwords are hashed with scrypt (a slow, memory-hard KDF) and a salt.

Every handler of the studio checks the caller's role, so ``role_of`` answers from a copy of
the (small) users table kept in memory; the functions here that change users drop the copy,
so a role change takes effect on the very next call. ``session_stamp`` comes from the same
copy: a login session remembers the stamp it began with and ends once the user's password
or role is changed (annotate/ui/sessions.py).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading

from .db import one, Store, StoreError

ROLES = ("admin", "annotator")
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt${}${}${}${}${}".format(_N, _R, _P, base64.b64encode(salt).decode(),
                                          base64.b64encode(digest).decode())


def _check_hash(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def add_user(db: Store, name: str, role: str, password: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StoreError("user names are 1-64 letters, digits or _ . @ -")
    if role not in ROLES:
        raise StoreError(f"role must be admin or annotator, not {role!r}")
    if not isinstance(password, str) or len(password) < 8:
        raise StoreError("passwords need at least 8 characters")
    hashed = hash_password(password)
    with db.write() as cur:
        db.queue_untouched()
        if one(cur, "SELECT 1 FROM users WHERE name = ?", [name]):
            raise StoreError(f"user {name!r} already exists")
        cur.execute("INSERT INTO users (name, role, password_hash) VALUES (?, ?, ?)",
                    [name, role, hashed])
    _forget_roles(db)


def set_role(db: Store, name: str, role: str) -> None:
    if role not in ROLES:
        raise StoreError(f"role must be admin or annotator, not {role!r}")
    with db.write() as cur:
        db.queue_untouched()
        if not one(cur, "SELECT 1 FROM users WHERE name = ?", [name]):
            raise StoreError(f"unknown user {name!r}")
        if role != "admin" and one(cur, 
                "SELECT count(*) FROM users WHERE role = 'admin' AND name <> ?", [name])[0] == 0:
            raise StoreError("refusing to remove the last admin")
        cur.execute("UPDATE users SET role = ? WHERE name = ?", [role, name])
    _forget_roles(db)


def set_password(db: Store, name: str, password: str) -> None:
    if not isinstance(password, str) or len(password) < 8:
        raise StoreError("passwords need at least 8 characters")
    hashed = hash_password(password)
    with db.write() as cur:
        db.queue_untouched()
        if not one(cur, "SELECT 1 FROM users WHERE name = ?", [name]):
            raise StoreError(f"unknown user {name!r}")
        cur.execute("UPDATE users SET password_hash = ? WHERE name = ?", [hashed, name])
    _forget_roles(db)  # the user's sessions end: their stamp changed


def verify_user(db: Store, name: str, password: str) -> str | None:
    """The user's role if the password is right, else None.

    An unknown name costs one scrypt too (against a fixed dummy hash), as a known one does,
    so the time of the answer does not tell which names exist.
    """
    row = db.query("SELECT role, password_hash FROM users WHERE name = ?", [name])
    if not row:
        _check_hash(password if isinstance(password, str) else "", _dummy_hash())
        return None
    return row[0]["role"] if _check_hash(password, row[0]["password_hash"]) else None


def _dummy_hash() -> str:
    if _DUMMY[0] is None:
        _DUMMY[0] = hash_password(secrets.token_urlsafe(16))
    return _DUMMY[0]


_DUMMY: list[str | None] = [None]


def role_of(db: Store, name: str) -> str | None:
    entry = _users_memo(db).get(name)
    return entry[0] if entry else None


def session_stamp(db: Store, name: str) -> str | None:
    """A short digest of the user's role and password hash (None for an unknown user): it
    changes whenever either does, which is what ends that user's open sessions."""
    entry = _users_memo(db).get(name)
    return entry[1] if entry else None


def _users_memo(db: Store) -> dict[str, tuple[str, str]]:
    """name -> (role, session stamp), read once and kept until users change."""
    users = db.memo.get("roles")
    if users is None:
        seen = db.memo.get("roles_changed", 0)
        rows = db.cursor().execute("SELECT name, role, password_hash FROM users").fetchall()
        users = {name: (role, hashlib.sha256(f"{role}\n{hashed}".encode()).hexdigest()[:24])
                 for name, role, hashed in rows}
        with _roles_lock:  # keep the copy only if no change was committed while reading
            if db.memo.get("roles_changed", 0) == seen:
                db.memo["roles"] = users
    return users


_roles_lock = threading.Lock()


def _forget_roles(db: Store) -> None:
    """Drop the in-memory roles after a committed change to users."""
    with _roles_lock:
        db.memo["roles_changed"] = db.memo.get("roles_changed", 0) + 1
        db.memo.pop("roles", None)


def list_users(db: Store) -> list[dict]:
    return db.query("SELECT name, role, created_at FROM users ORDER BY name")


def ensure_first_admin(db: Store, name: str = "admin") -> str | None:
    """On an empty user table create ``admin`` with a random one-time password and return it."""
    if db.scalar("SELECT count(*) FROM users"):
        return None
    password = secrets.token_urlsafe(12)
    add_user(db, name, "admin", password)
    return password
