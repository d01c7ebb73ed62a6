"""prefstudio users: add users, list them, change roles and passwords."""
from __future__ import annotations

import sys

from .common import CliError, emit, open_store

HELP = "manage users and roles"


def add_parser(sub) -> None:
    sp = sub.add_parser("users", help=HELP, description=HELP)
    sp.add_argument("action", choices=["add", "list", "set-role", "passwd"], help="what to do")
    sp.add_argument("name", nargs="?", help="the user (add, set-role, passwd)")
    sp.add_argument("--role", choices=["admin", "annotator"], help="add, set-role: the role")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")


def run(args) -> None:
    from annotate import store
    if args.action != "list" and not args.name:
        raise CliError(f"users {args.action} needs NAME")
    if args.action in ("add", "set-role") and not args.role:
        raise CliError(f"users {args.action} needs NAME and --role admin|annotator")
    with open_store(args.db) as db:
        if args.action == "add":
            store.add_user(db, args.name, args.role, _read_password(args))
            emit(args, {"user": args.name, "role": args.role}, f"added {args.role} {args.name}")
        elif args.action == "list":
            users = store.list_users(db)
            emit(args, {"users": users},
                 "\n".join(f"{u['name']}\t{u['role']}" for u in users) or "(no users)")
        elif args.action == "set-role":
            store.set_role(db, args.name, args.role)
            emit(args, {"user": args.name, "role": args.role}, f"{args.name} is now {args.role}")
        else:
            store.set_password(db, args.name, _read_password(args))
            emit(args, {"user": args.name}, f"password of {args.name} changed")


def _read_password(args) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        import getpass
        password = getpass.getpass(f"password for {args.name}: ")
    if not password:
        raise CliError("empty password")
    return password
