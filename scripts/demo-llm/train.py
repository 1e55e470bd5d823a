#!/usr/bin/env python3
"""Step 2 of the demo model (docs/demo-llm.md): train a small llama on the King James Bible.

The model is exactly what llama.cpp runs as `general.architecture = llama`: token embedding,
N blocks of (RMSNorm -> causal attention with RoPE -> residual, RMSNorm -> SwiGLU FFN ->
residual), final RMSNorm, untied output; no biases. RoPE is llama.cpp's "normal" mode, which
rotates ADJACENT pairs (x[2i], x[2i+1]); implemented that way here, the Q and K weights need no
permutation when converted.

Trade-off: the vocabulary is llama-spm's 32,000 tokens, but the Bible uses about 6,750 of them.
The trainer computes logits only for the tokens the corpus uses; every other token shares one
output row `unused` (learned), so all of them have the same logit u.h. The loss adds them as
one extra logit u.h + log(32,000 - used): it is the full-vocabulary cross entropy with the
unused rows tied, about 4x cheaper, and it learns to keep the unused tokens' share of the
probability small. Embedding rows of unused tokens are zero. Checkpoints are written in the
full 32,000 layout (every unused output row a copy of `unused`).

Input: .tmp/demo-llm/tokens.u16 from scripts/demo-llm/tokenize.ts. Output: checkpoints in
.tmp/demo-llm/ckpt/ (manifest.json + weights.bin, raw little-endian float32, torch's [out, in]
row-major layout), replaced every --checkpoint-minutes; scripts/demo-llm/convert.ts turns the
latest into a GGUF.

  OMP_NUM_THREADS=1 nice -n 19 /usr/bin/python3 scripts/demo-llm/train.py --minutes 35
  ... --resume --minutes 8 --lr 1e-3                       # continue from the checkpoint
  /usr/bin/python3 scripts/demo-llm/train.py predict < ids.json   # greedy reference for verify.ts
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
WORK = os.path.join(ROOT, '.tmp', 'demo-llm')
CKPT = os.path.join(WORK, 'ckpt')
VOCAB = 32000


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq, head_dim, base):
    inv = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv[None, :]  # [T, hd/2]
    return torch.cos(ang).float(), torch.sin(ang).float()


def rope(x, cos, sin):
    """llama.cpp LLAMA_ROPE_TYPE_NORM: rotate (x[2i], x[2i+1]) by pos * base^(-2i/hd). x: [B,H,T,hd]."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    t = x.shape[-2]
    c, s = cos[:t], sin[:t]
    return torch.stack((x0 * c - x1 * s, x0 * s + x1 * c), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, f = cfg['embedding'], cfg['feed_forward']
        self.heads = cfg['heads']
        self.attn_norm = RMSNorm(d, cfg['rms_eps'])
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.ffn_norm = RMSNorm(d, cfg['rms_eps'])
        self.gate = nn.Linear(d, f, bias=False)
        self.up = nn.Linear(d, f, bias=False)
        self.down = nn.Linear(f, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, d = x.shape
        hd = d // self.heads
        h = self.attn_norm(x)
        q = self.q(h).view(b, t, self.heads, hd).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, hd).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, hd).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        att = att.masked_fill(mask[:t, :t], float('-inf')).softmax(-1)
        x = x + self.o((att @ v).transpose(1, 2).reshape(b, t, d))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Llama(nn.Module):
    """Over a compact vocabulary of `used` token ids; full() gives the 32,000-token layout."""

    def __init__(self, cfg, used):
        super().__init__()
        self.cfg = cfg
        self.register_buffer('used', torch.tensor(used, dtype=torch.long), persistent=False)
        n, d = len(used), cfg['embedding']
        self.embed = nn.Embedding(n, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg['layers']))
        self.norm = RMSNorm(d, cfg['rms_eps'])
        self.output = nn.Linear(d, n, bias=False)
        # the output row every token outside `used` shares; a zero row (phase 1 of the committed
        # model, docs/demo-llm.md) gives each of them logit 0
        self.unused = nn.Parameter(torch.zeros(d))
        self.unused_count = math.log(VOCAB - n)
        cos, sin = rope_tables(cfg['context'], d // cfg['heads'], cfg['rope_base'])
        self.register_buffer('cos', cos, persistent=False)
        self.register_buffer('sin', sin, persistent=False)
        mask = torch.triu(torch.ones(cfg['context'], cfg['context'], dtype=torch.bool), 1)
        self.register_buffer('mask', mask, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * cfg['layers']) if name.endswith(('o.weight', 'down.weight')) else 0.02
                nn.init.normal_(p, 0.0, std)

    def hidden(self, ids):
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, self.cos, self.sin, self.mask)
        return self.norm(x)

    def logits(self, ids):
        """(logits of the used tokens, the logit each unused token has)."""
        h = self.hidden(ids)
        return self.output(h), h @ self.unused

    def loss(self, ids, targets):
        logits, unused = self.logits(ids)
        extra = (unused + self.unused_count).unsqueeze(-1)
        return F.cross_entropy(torch.cat((logits, extra), -1).flatten(0, 1), targets.flatten())

    def full(self):
        """(name, numpy float32 array in torch layout) in GGUF tensor order and names."""
        d = self.cfg['embedding']
        embd = torch.zeros(VOCAB, d)
        embd[self.used] = self.embed.weight.detach()
        out = self.unused.detach().expand(VOCAB, d).clone()
        out[self.used] = self.output.weight.detach()
        items = [('token_embd.weight', embd), ('output_norm.weight', self.norm.weight), ('output.weight', out)]
        for i, b in enumerate(self.blocks):
            p = f'blk.{i}.'
            items += [
                (p + 'attn_norm.weight', b.attn_norm.weight),
                (p + 'attn_q.weight', b.q.weight),
                (p + 'attn_k.weight', b.k.weight),
                (p + 'attn_v.weight', b.v.weight),
                (p + 'attn_output.weight', b.o.weight),
                (p + 'ffn_norm.weight', b.ffn_norm.weight),
                (p + 'ffn_gate.weight', b.gate.weight),
                (p + 'ffn_up.weight', b.up.weight),
                (p + 'ffn_down.weight', b.down.weight),
            ]
        return [(n, t.detach().float().contiguous().numpy()) for n, t in items]


def save_checkpoint(model, info, ckpt):
    """Replaces the checkpoint in `ckpt` (a folder) as a whole: written aside, then renamed."""
    tmp = ckpt + '.tmp'
    os.makedirs(tmp, exist_ok=True)
    tensors, offset = [], 0
    with open(os.path.join(tmp, 'weights.bin'), 'wb') as f:
        for name, a in model.full():
            f.write(a.astype('<f4').tobytes())
            tensors.append({'name': name, 'shape': list(a.shape), 'offset': offset})
            offset += a.size * 4
    manifest = {'format': 'infergrid-demo-llm-ckpt-v1', 'config': model.cfg, 'used': model.used.tolist(),
                'tensors': tensors, **info}
    with open(os.path.join(tmp, 'manifest.json'), 'w') as f:
        json.dump(manifest, f)
    if os.path.exists(ckpt):
        os.rename(ckpt, ckpt + '.old')
    os.rename(tmp, ckpt)
    if os.path.exists(ckpt + '.old'):
        for n in os.listdir(ckpt + '.old'):
            os.remove(os.path.join(ckpt + '.old', n))
        os.rmdir(ckpt + '.old')


def load_checkpoint(f16, ckpt=CKPT):
    with open(os.path.join(ckpt, 'manifest.json')) as f:
        m = json.load(f)
    raw = np.fromfile(os.path.join(ckpt, 'weights.bin'), dtype='<f4')
    model = Llama(m['config'], m['used'])
    used = torch.tensor(m['used'])
    w = {}
    for t in m['tensors']:
        n = int(np.prod(t['shape']))
        a = torch.from_numpy(raw[t['offset'] // 4:t['offset'] // 4 + n].reshape(t['shape']).copy())
        # what the GGUF holds: matrices in F16, norms in F32
        w[t['name']] = a.half().float() if f16 and a.dim() == 2 else a
    with torch.no_grad():
        model.embed.weight.copy_(w['token_embd.weight'][used])
        model.output.weight.copy_(w['output.weight'][used])
        used_set = set(m['used'])
        unused_id = next(i for i in range(VOCAB) if i not in used_set)
        model.unused.copy_(w['output.weight'][unused_id])
        model.norm.weight.copy_(w['output_norm.weight'])
        for i, b in enumerate(model.blocks):
            p = f'blk.{i}.'
            for mod, name in [(b.attn_norm, 'attn_norm'), (b.q, 'attn_q'), (b.k, 'attn_k'), (b.v, 'attn_v'),
                              (b.o, 'attn_output'), (b.ffn_norm, 'ffn_norm'), (b.gate, 'ffn_gate'),
                              (b.up, 'ffn_up'), (b.down, 'ffn_down')]:
                mod.weight.copy_(w[p + name + '.weight'])
    return model, m


def train(args):
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    tokens = np.fromfile(os.path.join(WORK, 'tokens.u16'), dtype='<u2').astype(np.int64)
    with open(os.path.join(WORK, 'tokens.json')) as f:
        meta = json.load(f)
    bos = meta['bos']
    used = sorted(set(tokens.tolist()) | {bos, 2})  # 2 = EOS, so it has a row to learn
    compact = np.zeros(VOCAB, dtype=np.int64)
    compact[used] = np.arange(len(used))
    data = torch.from_numpy(compact[tokens])
    split = int(len(data) * (1 - args.validation_share))
    train_data, val_data = data[:split], data[split:]
    cfg = {'embedding': args.embedding, 'layers': args.layers, 'heads': args.heads,
           'feed_forward': args.feed_forward, 'context': args.context, 'rms_eps': 1e-5, 'rope_base': 10000.0}
    if args.resume:
        model, m = load_checkpoint(f16=False, ckpt=args.checkpoint)
        if model.used.tolist() != used:
            raise SystemExit(f'{args.checkpoint}: trained on other tokens than {WORK}/tokens.u16')
        cfg = model.cfg
        print(json.dumps({'resumed': {'step': m['step'], 'tokens_seen': m['tokens_seen']}}), flush=True)
    else:
        model = Llama(cfg, used)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    t = args.context
    cbos = int(compact[bos])

    def batch(src, n, gen=None):
        # each window: BOS, then context-1 tokens from a random offset (a prompt also starts with BOS)
        starts = torch.randint(0, len(src) - t, (n,), generator=gen)
        x = torch.stack([src[s:s + t] for s in starts])
        ids = torch.cat((torch.full((n, 1), cbos), x[:, :-1]), 1)
        return ids, x

    val_gen = torch.Generator().manual_seed(7)
    val_batches = [batch(val_data, args.batch, val_gen) for _ in range(4)]

    def val_loss():
        model.eval()
        with torch.no_grad():
            v = sum(model.loss(i, y).item() for i, y in val_batches) / len(val_batches)
        model.train()
        return v

    print(json.dumps({'params': params, 'used_tokens': len(used), 'train_tokens': len(train_data),
                      'val_tokens': len(val_data), 'threads': torch.get_num_threads(), 'config': cfg}), flush=True)
    budget = args.minutes * 60
    start = time.time()
    last_ckpt = start
    step, seen, ema = 0, 0, None
    curve, phases = [], []
    if args.resume:
        # a checkpoint from before phases were recorded had one phase, from step 0
        seen, curve, phases = m['tokens_seen'], m['curve'], m.get('phases') or [{'resumed': False, 'from_step': 0}]
        step = m['step']
    first_step = step
    phases.append({'resumed': bool(args.resume), 'minutes': args.minutes, 'lr': args.lr, 'from_step': step})
    while True:
        elapsed = time.time() - start
        if elapsed >= budget:
            break
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step - first_step + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g['lr'] = lr
        ids, y = batch(train_data, args.batch)
        loss = model.loss(ids, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += ids.numel()
        run_tokens = (step - first_step) * ids.numel()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % 25 == 0:
            el = time.time() - start
            print(json.dumps({'step': step, 'minutes': round(el / 60, 2), 'tokens': seen,
                              'tokens_per_s': round(run_tokens / el), 'lr': round(lr, 6), 'loss': round(ema, 4)}), flush=True)
        if time.time() - last_ckpt >= args.checkpoint_minutes * 60:
            v = val_loss()
            curve.append({'phase': len(phases), 'minutes': round((time.time() - start) / 60, 1), 'tokens': seen,
                          'train_loss': round(ema, 4), 'val_loss': round(v, 4)})
            print(json.dumps({'checkpoint': curve[-1]}), flush=True)
            save_checkpoint(model, {'step': step, 'tokens_seen': seen, 'curve': curve, 'phases': phases,
                                    'seed': args.seed}, args.checkpoint)
            last_ckpt = time.time()
    v = val_loss()
    curve.append({'phase': len(phases), 'minutes': round((time.time() - start) / 60, 1), 'tokens': seen,
                  'train_loss': round(ema, 4), 'val_loss': round(v, 4)})
    save_checkpoint(model, {'step': step, 'tokens_seen': seen, 'curve': curve, 'phases': phases, 'seed': args.seed,
                            'final': True}, args.checkpoint)
    print(json.dumps({'done': curve[-1], 'steps': step}), flush=True)


def predict(args):
    """stdin: {"prompts": [[ids...]], "steps": n}; stdout: greedy continuations and their probabilities."""
    req = json.load(sys.stdin)
    model, _ = load_checkpoint(f16=True, ckpt=args.checkpoint)
    model.eval()
    compact = {tok: i for i, tok in enumerate(model.used.tolist())}
    out = []
    with torch.no_grad():
        for prompt in req['prompts']:
            ids = [compact.get(tok) for tok in prompt]
            if None in ids:
                raise SystemExit(f'prompt has tokens the model never saw: {prompt}')
            gen, top = [], []
            for _ in range(req['steps']):
                logits, unused = model.logits(torch.tensor([ids]))
                logits, unused = logits[0, -1], unused[0, -1]
                best = int(logits.argmax())
                if logits[best].item() <= unused.item():
                    raise SystemExit('an unused token would win: the reference cannot say which')
                # the full-vocabulary softmax: every unused token has the logit `unused`
                z = torch.logsumexp(torch.cat((logits, (unused + model.unused_count).view(1))), 0)
                gen.append(int(model.used[best]))
                top.append(math.exp(logits[best].item() - z.item()))
                ids.append(best)
            out.append({'tokens': gen, 'top_probabilities': top})
    json.dump(out, sys.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('command', nargs='?', default='train', choices=['train', 'predict'])
    ap.add_argument('--minutes', type=float, default=35.0, help='training time budget (wall clock)')
    ap.add_argument('--checkpoint-minutes', type=float, default=4.0)
    ap.add_argument('--embedding', type=int, default=128)
    ap.add_argument('--layers', type=int, default=4)
    ap.add_argument('--heads', type=int, default=4)
    ap.add_argument('--feed-forward', type=int, default=384)
    ap.add_argument('--context', type=int, default=256)
    ap.add_argument('--batch', type=int, default=16)
    ap.add_argument('--lr', type=float, default=3e-3)
    ap.add_argument('--warmup', type=int, default=100)
    ap.add_argument('--validation-share', type=float, default=0.02)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--resume', action='store_true', help='continue from the checkpoint (fresh optimizer)')
    ap.add_argument('--checkpoint', default=CKPT, help='checkpoint folder: written (train), read (--resume, predict)')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1: the machine is shared)')
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == 'predict':
        predict(args)
    else:
        train(args)


if __name__ == '__main__':
    main()
