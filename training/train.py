"""Trains the small Mixtral-shaped MoE in `models/stdlib-moe` on the CPython standard library.

Not run in CI. On a 2-core machine, about an hour of CPU time:

    python3 -m venv /tmp/train-venv
    /tmp/train-venv/bin/pip install -r training/requirements.txt
    /tmp/train-venv/bin/python training/train.py --out models/stdlib-moe

The corpus is every `.py` file of the running interpreter's standard library (not
site-packages). A file goes to the held-out split when the CRC32 of its path relative to the
library root is 0 modulo 20 (5% of the files), so the split is by file and the same on every
machine with the same Python version. The outputs, in `--out`:

- `tokenizer.json`, `tokenizer_config.json`: byte-level BPE of 4096 tokens trained on the training
  split, with `<pad>` `<s>` `</s>` at ids 0 1 2 and the chat template `moe gen-model` writes;
- `config.json`, `generation_config.json`, `model.safetensors` (f16): the HF Mixtral layout;
- `heldout.py`: the held-out files, cut to `--heldout-bytes`, joined by a form feed line;
- `reference.json`: token ids of a held-out window and the model's f32 log-probabilities of a few of
  its positions, which the Rust loader is tested against;
- `training.json`: the loss curve and the held-out perplexity.
"""

import argparse
import json
import math
import os
import sys
import sysconfig
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIALS = ["<pad>", "<s>", "</s>"]
BOS, EOS = 1, 2
CHAT_TEMPLATE = (
    "{%- for message in messages -%}{{ bos_token + message['role'] + '\\n' + message['content']"
    " + eos_token + '\\n' }}{%- endfor -%}{%- if add_generation_prompt -%}"
    "{{ bos_token + 'assistant\\n' }}{%- endif -%}"
)


def corpus_files():
    root = sysconfig.get_paths()["stdlib"]
    train, heldout = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            (heldout if zlib.crc32(rel.encode()) % 20 == 0 else train).append((rel, text))
    return root, train, heldout


def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def encode_files(tok, files):
    ids = []
    for _, text in files:
        ids.append(BOS)
        ids.extend(tok.encode(text).ids)
        ids.append(EOS)
    return np.asarray(ids, dtype=np.int32)


def init_params(cfg, key):
    d, f, e, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"], cfg["vocab_size"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    keys = iter(jax.random.split(key, 16 * cfg["num_hidden_layers"] + 4))

    def normal(shape, std=0.02):
        return std * jax.random.normal(next(keys), shape, dtype=jnp.float32)

    out_std = 0.02 / math.sqrt(2 * cfg["num_hidden_layers"])
    layers = []
    for _ in range(cfg["num_hidden_layers"]):
        layers.append(
            {
                "input_norm": jnp.ones(d),
                "q": normal((d, d)),
                "k": normal((kv, d)),
                "v": normal((kv, d)),
                "o": normal((d, d), out_std),
                "post_norm": jnp.ones(d),
                "gate": normal((e, d)),
                "w1": normal((e, f, d)),
                "w3": normal((e, f, d)),
                "w2": normal((e, d, f), out_std),
            }
        )
    return {"embed": normal((v, d)), "layers": layers, "norm": jnp.ones(d), "lm_head": normal((v, d))}


def rms_norm(x, w, eps):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, theta):
    # HF's rotate_half convention: the first and second halves of each head are the pairs.
    t, hd = x.shape[-3], x.shape[-1]
    inv = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    ang = jnp.arange(t, dtype=jnp.float32)[:, None] * inv[None, :]
    cos = jnp.concatenate([jnp.cos(ang)] * 2, axis=-1)[:, None, :]
    sin = jnp.concatenate([jnp.sin(ang)] * 2, axis=-1)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + jnp.concatenate([-x2, x1], axis=-1) * sin


def attention(p, x, cfg):
    b, t, d = x.shape
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // nh
    q = (x @ p["q"].T).reshape(b, t, nh, hd)
    k = (x @ p["k"].T).reshape(b, t, nkv, hd)
    v = (x @ p["v"].T).reshape(b, t, nkv, hd)
    q, k = rope(q, cfg["rope_theta"]), rope(k, cfg["rope_theta"])
    k = jnp.repeat(k, nh // nkv, axis=2)
    v = jnp.repeat(v, nh // nkv, axis=2)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
    mask = jnp.tril(jnp.ones((t, t), dtype=bool))
    s = jnp.where(mask, s, -1e30)
    a = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, t, d)
    return o @ p["o"].T


def route(p, x, top_k):
    """Mixtral's router: softmax over all experts, top-k, renormalised."""
    probs = jax.nn.softmax(x @ p["gate"].T, axis=-1)
    top_w, top_i = jax.lax.top_k(probs, top_k)
    top_w = top_w / jnp.sum(top_w, axis=-1, keepdims=True)
    return probs, top_w, top_i


def expert(p, e, x):
    return (jax.nn.silu(x @ p["w1"][e].T) * (x @ p["w3"][e].T)) @ p["w2"][e].T


def moe_exact(p, x, top_k):
    """Every token through its top-k experts, no capacity: the serving path's arithmetic."""
    n, d = x.shape
    probs, top_w, top_i = route(p, x, top_k)
    out = jnp.zeros_like(x)
    for e in range(p["gate"].shape[0]):
        w = jnp.sum(jnp.where(top_i == e, top_w, 0.0), axis=-1)
        out = out + w[:, None] * expert(p, e, x)
    return out, probs, top_i


def moe_train(p, x, top_k, capacity):
    """Per expert, the `capacity` tokens with the largest weight for it (others dropped)."""
    n, d = x.shape
    e_count = p["gate"].shape[0]
    probs, top_w, top_i = route(p, x, top_k)
    weight = jnp.stack([jnp.sum(jnp.where(top_i == e, top_w, 0.0), axis=-1) for e in range(e_count)])
    chosen_w, idx = jax.lax.top_k(weight, capacity)  # [E, C]
    xs = x[idx]  # [E, C, d]
    h = jax.nn.silu(jnp.einsum("ecd,efd->ecf", xs, p["w1"])) * jnp.einsum("ecd,efd->ecf", xs, p["w3"])
    y = jnp.einsum("ecf,edf->ecd", h, p["w2"]) * chosen_w[..., None]
    out = jnp.zeros_like(x).at[idx.reshape(-1)].add(y.reshape(-1, d))
    return out, probs, top_i


def forward(params, ids, cfg, capacity=None):
    b, t = ids.shape
    x = params["embed"][ids]
    eps, k = cfg["rms_norm_eps"], cfg["num_experts_per_tok"]
    aux = 0.0
    for p in params["layers"]:
        x = x + attention(p, rms_norm(x, p["input_norm"], eps), cfg)
        h = rms_norm(x, p["post_norm"], eps).reshape(b * t, -1)
        if capacity is None:
            y, probs, top_i = moe_exact(p, h, k)
        else:
            y, probs, top_i = moe_train(p, h, k, capacity)
        e = probs.shape[-1]
        frac = jnp.mean(jax.nn.one_hot(top_i, e).sum(axis=1), axis=0) / k
        aux = aux + e * jnp.sum(frac * jnp.mean(probs, axis=0))
        x = x + y.reshape(b, t, -1)
    x = rms_norm(x, params["norm"], eps)
    return x @ params["lm_head"].T, aux / len(params["layers"])


def nll(logits, targets):
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def batches(data, batch, seq, rng):
    starts = rng.integers(0, len(data) - seq - 1, size=batch)
    chunk = np.stack([data[s : s + seq + 1] for s in starts])
    return chunk[:, :-1], chunk[:, 1:]


def heldout_nll(params, data, cfg, seq, eval_fn):
    total, count = 0.0, 0
    for s in range(0, len(data) - seq - 1, seq):
        x = data[s : s + seq][None]
        y = data[s + 1 : s + seq + 1][None]
        total += float(jnp.sum(eval_fn(params, x, y)))
        count += seq
    return total / count


def to_hf(params, cfg):
    t = {"model.embed_tokens.weight": params["embed"], "model.norm.weight": params["norm"], "lm_head.weight": params["lm_head"]}
    for i, p in enumerate(params["layers"]):
        pre = f"model.layers.{i}."
        t[pre + "input_layernorm.weight"] = p["input_norm"]
        t[pre + "post_attention_layernorm.weight"] = p["post_norm"]
        for n in ("q", "k", "v", "o"):
            t[pre + f"self_attn.{n}_proj.weight"] = p[n]
        t[pre + "block_sparse_moe.gate.weight"] = p["gate"]
        for e in range(cfg["num_local_experts"]):
            for w in ("w1", "w2", "w3"):
                t[pre + f"block_sparse_moe.experts.{e}.{w}.weight"] = p[w][e]
    return {k: np.asarray(v, dtype=np.float16) for k, v in t.items()}


def f16_round_trip(params):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float16).astype(jnp.float32), params)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=120.0, help="stop early after this long")
    ap.add_argument("--max-steps", type=int, default=2500, help="the learning rate decays to a tenth by then")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--intermediate", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--heldout-bytes", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    root, train_files, heldout_files = corpus_files()
    train_bytes = sum(len(t.encode()) for _, t in train_files)
    print(f"corpus {root}: {len(train_files)} training files ({train_bytes / 1e6:.1f} MB), {len(heldout_files)} held out", flush=True)

    tok = train_tokenizer((t for _, t in train_files), args.vocab)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2]
    tok.save(os.path.join(args.out, "tokenizer.json"))
    heldout_text = "\n\f\n".join(t for _, t in heldout_files)[: args.heldout_bytes]
    with open(os.path.join(args.out, "heldout.py"), "w", encoding="utf-8") as f:
        f.write(heldout_text)
    train_data = encode_files(tok, train_files)
    heldout_data = np.asarray([BOS] + tok.encode(heldout_text).ids, dtype=np.int32)
    print(f"tokens: {len(train_data)} training, {len(heldout_data)} held out", flush=True)

    cfg = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "vocab_size": args.vocab,
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.hidden // 64,
        "num_key_value_heads": max(1, args.hidden // 128),
        "head_dim": 64,
        "num_local_experts": args.experts,
        "num_experts_per_tok": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "attention_dropout": 0.0,
        "router_aux_loss_coef": args.aux_coef,
        "output_router_logits": False,
        "bos_token_id": BOS,
        "eos_token_id": EOS,
        "pad_token_id": 0,
        "torch_dtype": "float16",
        "use_cache": True,
    }
    capacity = int(math.ceil(args.batch * args.seq * 2 / args.experts * 1.5))
    params = init_params(cfg, jax.random.PRNGKey(args.seed))
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    print(f"parameters: {n_params / 1e6:.2f} M", flush=True)

    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, 200, args.max_steps, args.lr * 0.1)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b2=0.95, weight_decay=0.1))
    opt_state = opt.init(params)

    def loss_fn(params, x, y):
        logits, aux = forward(params, x, cfg, capacity)
        lm = jnp.mean(nll(logits, y))
        return lm + args.aux_coef * aux, (lm, aux)

    @jax.jit
    def step(params, opt_state, x, y):
        (_, (lm, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, lm, aux

    @jax.jit
    def eval_nll(params, x, y):
        return nll(forward(params, x, cfg)[0], y)

    rng = np.random.default_rng(args.seed)
    curve, start, last = [], time.time(), time.time()
    for i in range(1, args.max_steps + 1):
        x, y = batches(train_data, args.batch, args.seq, rng)
        params, opt_state, lm, aux = step(params, opt_state, x, y)
        if i % 25 == 0:
            elapsed = time.time() - start
            curve.append({"step": i, "seconds": round(elapsed, 1), "loss": round(float(lm), 4), "aux": round(float(aux), 4)})
            print(f"step {i} {elapsed:.0f}s loss {float(lm):.4f} aux {float(aux):.3f} ({(time.time() - last) / 25:.2f} s/step)", flush=True)
            last = time.time()
            if elapsed > args.minutes * 60:
                break

    served = f16_round_trip(params)
    ppl_nll = heldout_nll(served, heldout_data, cfg, args.seq, eval_nll)
    print(f"held-out: {ppl_nll:.4f} nats/token, perplexity {math.exp(ppl_nll):.3f}", flush=True)

    save_file(to_hf(params, cfg), os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": BOS, "eos_token_id": EOS}, f, indent=2)
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True} for i, s in enumerate(SPECIALS)}
    tok_cfg = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": "<s>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": cfg["max_position_embeddings"],
        "pad_token": "<pad>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)

    window = heldout_data[:64]
    logits, _ = forward(served, window[None], cfg)
    logp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
    positions = [0, 1, 7, 31, 63]
    reference = {
        "ids": window.tolist(),
        "positions": positions,
        "top": [[[int(t), float(logp[p, t])] for t in np.argsort(-logp[p])[:5]] for p in positions],
        "nll": float(-np.mean(logp[np.arange(63), window[1:]])),
    }
    with open(os.path.join(args.out, "reference.json"), "w") as f:
        json.dump(reference, f, indent=1)
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(
            {
                "python": sys.version.split()[0],
                "corpus": {"training_files": len(train_files), "heldout_files": len(heldout_files), "training_bytes": train_bytes, "training_tokens": int(len(train_data))},
                "parameters": n_params,
                "args": vars(args),
                "steps": curve[-1]["step"] if curve else 0,
                "tokens_seen": (curve[-1]["step"] if curve else 0) * args.batch * args.seq,
                "heldout": {"tokens": int(len(heldout_data)), "nll": ppl_nll, "perplexity": math.exp(ppl_nll)},
                "curve": curve,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
