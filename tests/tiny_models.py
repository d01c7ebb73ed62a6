"""Tiny models built in the test process: nothing is downloaded, each builds in well under a second.

``tiny_causal_lm(folder)`` saves a 2-layer Llama with a word-level tokenizer trained here and a
ChatML chat template (the same template family as SmolLM2), so code under test loads it from a
folder exactly like a real model. ``tiny_encoder(folder)`` does the same for a 2-layer BERT.
"""
from __future__ import annotations

from pathlib import Path

WORDS = ("the a an is are was be to of and in on for with it this that you i we they not no yes "
         "good bad great awful helpful harmful safe unsafe answer question please thanks sorry "
         "hello hi how what why when where who can could would should will do does did make "
         "code python list sort number one two three four five cat dog sun moon tea coffee "
         "write story poem help me tell about explain short long happy sad ok sure here "
         "because so but or if then love like know think want need go come see say").split()
MARKERS = ["zebra", "quokka"]  # tokens tests use as programmatic preferences
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
          "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "[CLS]", "[SEP]"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + ["\n", "user", "assistant", "system"]
                                           + WORDS + MARKERS + list(".,!?'0123456789"))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   cls_token="[CLS]", sep_token="[SEP]")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    return fast


def tiny_causal_lm(folder: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0,
                   init_std: float = 0.02) -> Path:
    """``init_std`` is the weight init scale. With the default 0.02 and 32 dimensions the
    logits can never leave about ±0.7 (the final RMSNorm fixes the hidden norm and the tied
    embeddings are tiny), so a LoRA adapter alone cannot make any token likely; policy tests use
    ``init_std=0.2`` (fixture ``tiny_policy``) to give the adapter room to learn."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tok = _tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                         tie_word_embeddings=True, initializer_range=init_std)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_encoder(folder: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tokenizers import processors

    folder = Path(folder)
    tok = _tokenizer()
    # like a real BERT tokenizer: [CLS] a [SEP] b [SEP] with token types 0 / 1
    cls_id, sep_id = tok.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.model_input_names = tok.init_kwargs["model_input_names"] = [
        "input_ids", "token_type_ids", "attention_mask"]
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                        num_hidden_layers=layers, num_attention_heads=4,
                        max_position_embeddings=512, pad_token_id=tok.pad_token_id, num_labels=1)
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
