"""Deliberately plain reference implementations of each fusion strategy, written from the
papers' equations with explicit loops over samples, tokens, windows and points, sharing no
code with models/fusion. They read the weights of the vectorized module under test, so the
two must agree number for number on small random tensors."""
from __future__ import annotations

import math

import torch


# --- scalar-level building blocks -------------------------------------------------------------
def linear(x: torch.Tensor, layer) -> torch.Tensor:
    """One vector through an nn.Linear's weights: out_j = sum_i W_ji x_i + b_j."""
    w, b = layer.weight, layer.bias
    return torch.stack([sum(w[j, i] * x[i] for i in range(len(x))) + b[j]
                        for j in range(w.shape[0])])


def layer_norm(x: torch.Tensor, layer) -> torch.Tensor:
    mean = sum(x) / len(x)
    var = sum((v - mean) ** 2 for v in x) / len(x)
    return (x - mean) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias


def gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def softmax(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    top = max(float(s) for s in scores)
    exps = [torch.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def sample_zero_padded(fmap: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear read of [C, H, W] at pixel coordinates (x, y) (pixel centres at integers);
    neighbours outside the map count as zero (grid_sample's padding_mode='zeros')."""
    c, h, w = fmap.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(c, dtype=fmap.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + wy * wx * fmap[:, yy, xx]
    return out


def resize(fmap: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[C, H, W] -> [C, h, w], bilinear with half-pixel centres, edges clamped (what
    F.interpolate(mode='bilinear', align_corners=False) computes)."""
    c, h, w = fmap.shape
    oh, ow = size
    out = torch.zeros(c, oh, ow, dtype=fmap.dtype)
    for i in range(oh):
        sy = max((i + 0.5) * h / oh - 0.5, 0.0)
        y0 = min(math.floor(sy), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - y0
        for j in range(ow):
            sx = max((j + 0.5) * w / ow - 0.5, 0.0)
            x0 = min(math.floor(sx), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - x0
            out[:, i, j] = ((1 - fy) * ((1 - fx) * fmap[:, y0, x0] + fx * fmap[:, y0, x1])
                            + fy * ((1 - fx) * fmap[:, y1, x0] + fx * fmap[:, y1, x1]))
    return out


def conv2d(fmap: torch.Tensor, conv, groups: int = 1) -> torch.Tensor:
    """[C, H, W] through an nn.Conv2d (stride 1, 'same' zero padding), one output at a time."""
    c_in, h, w = fmap.shape
    weight, bias = conv.weight, conv.bias
    c_out, per_group, kh, kw = weight.shape
    ph, pw = kh // 2, kw // 2
    out_per_group = c_out // groups
    out = torch.zeros(c_out, h, w, dtype=fmap.dtype)
    for o in range(c_out):
        first = (o // out_per_group) * per_group
        for i in range(h):
            for j in range(w):
                total = bias[o]
                for ci in range(per_group):
                    for u in range(kh):
                        for v in range(kw):
                            y, x = i + u - ph, j + v - pw
                            if 0 <= y < h and 0 <= x < w:
                                total = total + weight[o, ci, u, v] * fmap[first + ci, y, x]
                out[o, i, j] = total
    return out


def tokens(fmap: torch.Tensor) -> list[torch.Tensor]:
    """[C, H, W] -> row-major list of C-vectors."""
    c, h, w = fmap.shape
    return [fmap[:, i, j] for i in range(h) for j in range(w)]


# --- Dense Connector ---------------------------------------------------------------------------
def dense_connector(fusion, hidden: dict[int, torch.Tensor], b: int, depth: int
                    ) -> torch.Tensor:
    """hidden: index -> [B, C, H, W] of a ViT with blocks 1..depth. Paper layer k is index
    k-1, and the paper's final layer defaults to `depth` (LLaVA's penultimate state)."""
    o = fusion.options
    final_index = (o.final if o.final is not None else depth) - 1
    rows = []
    for s in range(b):
        final = tokens(hidden[final_index][s])
        if o.mode == "sti":
            seq = list(final)
            for g, k in enumerate(o.layers):
                layer = tokens(hidden[k - 1][s])
                for start in range(0, len(layer) - o.alpha + 1, o.alpha):
                    window = layer[start:start + o.alpha]
                    if o.learned:
                        conv = fusion.pools[g]
                        seq.append(torch.stack([
                            conv.bias[c] + sum(conv.weight[c, ci, t] * window[t][ci]
                                               for t in range(o.alpha)
                                               for ci in range(len(window[t])))
                            for c in range(conv.weight.shape[0])]))
                    else:
                        seq.append(sum(window) / o.alpha)
            rows.append(torch.stack(seq))
        elif o.mode == "sci":
            extra = []
            for k in o.layers:
                fmap = hidden[k - 1][s]
                extra.append(tokens(conv2d(fmap, fusion.shared_conv) if o.learned else fmap))
            rows.append(torch.stack([torch.cat([final[t], *(e[t] for e in extra)])
                                     for t in range(len(final))]))
        else:
            size = (final_index + 1) // o.groups
            means = []
            for g in range(o.groups):
                members = []
                for k in range(g * size + 1, (g + 1) * size + 1):
                    layer = tokens(hidden[k - 1][s])
                    if o.learned:
                        layer = [linear(layer_norm(v, fusion.norms[str(k - 1)]),
                                        fusion.shared_linear) for v in layer]
                    members.append(layer)
                means.append([sum(m[t] for m in members) / size for t in range(len(final))])
            rows.append(torch.stack([torch.cat([final[t], *(m[t] for m in means)])
                                     for t in range(len(final))]))
    return torch.stack(rows)


def efficient_downsample(projected: torch.Tensor, side: int) -> torch.Tensor:
    """[B, N, D] on a sqrt(N) grid -> [B, side^2, D] by bilinear resizing."""
    b, n, d = projected.shape
    grid = math.isqrt(n)
    out = []
    for s in range(b):
        fmap = projected[s].T.reshape(d, grid, grid)
        out.append(torch.stack(tokens(resize(fmap, (side, side)))))
    return torch.stack(out)


# --- Mini-Gemini ---------------------------------------------------------------------------------
def key_map(fusion, maps: dict[str, torch.Tensor], s: int) -> torch.Tensor:
    parts = []
    for spec in fusion.keys:
        m = maps[f"{spec.expert}:{spec.layer}"][s]
        parts.append(m if tuple(m.shape[-2:]) == fusion.key_grid else resize(m, fusion.key_grid))
    return torch.cat(parts)


def patch_info_mining(fusion, maps: dict[str, torch.Tensor], b: int) -> torch.Tensor:
    qh, qw = fusion.query.grid
    wh, ww = fusion.window
    rows = []
    for s in range(b):
        q_map = maps[f"{fusion.query.expert}:{fusion.query.layer}"][s]
        k_map = key_map(fusion, maps, s)
        out = []
        for i in range(qh):
            for j in range(qw):
                query = q_map[:, i, j]
                q = linear(layer_norm(query, fusion.norm_q), fusion.to_q)
                scores, values = [], []
                for u in range(i * wh, (i + 1) * wh):
                    for v in range(j * ww, (j + 1) * ww):
                        # Mini-Gemini: keys and values each through a LayerNorm of their own
                        key = layer_norm(k_map[:, u, v], fusion.norm_k)
                        value = layer_norm(k_map[:, u, v], fusion.norm_v or fusion.norm_k)
                        scores.append(torch.dot(q, linear(key, fusion.to_k)) / math.sqrt(len(q)))
                        values.append(linear(value, fusion.to_v))
                weights = softmax(scores)
                out.append(query + sum(w * v for w, v in zip(weights, values)))
        rows.append(torch.stack(out))
    return torch.stack(rows)


def deformable_mining(fusion, maps: dict[str, torch.Tensor], b: int) -> torch.Tensor:
    qh, qw = fusion.query.grid
    kh, kw = fusion.key_grid
    heads, points = fusion.heads, fusion.points
    per_head = fusion.query_width // heads
    rows = []
    for s in range(b):
        q_map = maps[f"{fusion.query.expert}:{fusion.query.layer}"][s]
        k_map = key_map(fusion, maps, s)
        values = torch.zeros(fusion.query_width, kh, kw)
        for u in range(kh):
            for v in range(kw):
                values[:, u, v] = linear(layer_norm(k_map[:, u, v], fusion.norm_k), fusion.to_v)
        out = []
        for i in range(qh):
            for j in range(qw):
                query = q_map[:, i, j]
                q = linear(layer_norm(query, fusion.norm_q), fusion.to_q)
                offsets = linear(q, fusion.offsets)
                logits = linear(q, fusion.weights)
                ref_x, ref_y = (j + 0.5) / qw, (i + 0.5) / qh
                mixed = []
                for h in range(heads):
                    weights = softmax([logits[h * points + p] for p in range(points)])
                    acc = torch.zeros(per_head)
                    for p in range(points):
                        dx = offsets[(h * points + p) * 2]
                        dy = offsets[(h * points + p) * 2 + 1]
                        # normalized location -> pixel coordinates with centres at integers
                        x = float((ref_x + dx / kw) * kw - 0.5)
                        y = float((ref_y + dy / kh) * kh - 0.5)
                        head_values = values[h * per_head:(h + 1) * per_head]
                        acc = acc + weights[p] * sample_zero_padded(head_values, x, y)
                    mixed.append(acc)
                out.append(query + linear(torch.cat(mixed), fusion.out))
        rows.append(torch.stack(out))
    return torch.stack(rows)


# --- LLaVA-HR MR-adapter -----------------------------------------------------------------------
# Restated from luogen1996/LLaVA-HR (commit 1212ffb),
# llava_hr/model/multimodal_encoder/multipath_encoder_wapper.py, cited as `wrapper:N`.
def resize_corner_aligned(fmap: torch.Tensor, side: int) -> torch.Tensor:
    """[C, H, W] -> [C, side, side]: output pixel i samples input position i*(H-1)/(side-1)
    (corner pixels on corner pixels), bilinear between the four neighbours."""
    c, h, w = fmap.shape
    out = torch.zeros(c, side, side, dtype=fmap.dtype)
    for i in range(side):
        y = i * (h - 1) / (side - 1) if side > 1 else 0.0
        y0 = min(int(math.floor(y)), h - 1)
        y1, fy = min(y0 + 1, h - 1), y - y0
        for j in range(side):
            x = j * (w - 1) / (side - 1) if side > 1 else 0.0
            x0 = min(int(math.floor(x)), w - 1)
            x1, fx = min(x0 + 1, w - 1), x - x0
            for ch in range(c):
                top = (1 - fx) * fmap[ch, y0, x0] + fx * fmap[ch, y0, x1]
                bottom = (1 - fx) * fmap[ch, y1, x0] + fx * fmap[ch, y1, x1]
                out[ch, i, j] = (1 - fy) * top + fy * bottom
    return out


def average_pool(fmap: torch.Tensor, k: int) -> torch.Tensor:
    """[C, H, W] -> [C, H/k, W/k]: the mean of each k x k window (avg_pool2d(x, k, k))."""
    c, h, w = fmap.shape
    out = torch.zeros(c, h // k, w // k, dtype=fmap.dtype)
    for i in range(h // k):
        for j in range(w // k):
            window = [fmap[:, k * i + u, k * j + v] for u in range(k) for v in range(k)]
            out[:, i, j] = sum(window) / (k * k)
    return out


def src2dst_align(src: torch.Tensor, dst_tokens: int) -> list[torch.Tensor]:
    """wrapper:74-94: a square [C, s, s] map onto sqrt(dst_tokens)^2 tokens."""
    dst_size = int(math.sqrt(dst_tokens))
    src_size = src.shape[1]
    assert (src_size ** 2) % dst_tokens == 0 or dst_tokens % (src_size ** 2) == 0   # :76
    if src_size ** 2 < dst_tokens:                                  # :77-85 upsample
        src = resize_corner_aligned(src, dst_size)
    elif src_size ** 2 > dst_tokens:                                # :86-93 pooling
        src = average_pool(src, src_size // dst_size)
    return tokens(src)


def mr_injection(module, fast_feat: list[torch.Tensor], slow_feat: torch.Tensor
                 ) -> list[torch.Tensor]:
    """S2FStitchAlignModuleV2.forward (wrapper:96-107) for one sample: fast_feat the ViT's
    tokens, slow_feat the ConvNet map [C_s, h, w]."""
    d = fast_feat[0].shape[0]
    slow = conv2d(gelu(conv2d(slow_feat, module.slow_conv)), module.slow_proj)       # :99
    slow_align = src2dst_align(slow, len(fast_feat))                                  # :100-101
    side = int(math.sqrt(len(fast_feat)))
    fast = torch.stack(fast_feat, dim=1).reshape(d, side, side)                       # :102
    fast = fast + conv2d(gelu(conv2d(fast, module.fast_conv, groups=d)),
                         module.fast_proj)                                            # :103
    fast_tokens = tokens(fast)                                                        # :104
    pooled = sum(torch.cat([f, s]) for f, s in zip(fast_tokens, slow_align)) / len(fast_tokens)
    gate = linear(gelu(linear(pooled, module.gate[0])), module.gate[2])               # :105
    return [f + s * torch.tanh(gate[0]) for f, s in zip(fast_tokens, slow_align)]     # :106


def mr_adapter(fusion, vit, injected: list[torch.Tensor], last: torch.Tensor,
               vit_pixels: torch.Tensor) -> torch.Tensor:
    """MultiPathCLIPVisionTower.forward (wrapper:151-227) on an HF CLIP tower. The wrapper
    gives the ConvNeXt's stage 4 (`x`, wrapper:166-172) to every injection: pass it three times
    as `injected` (three other maps check `injected: stages`); `last` is stage 4."""
    tower = getattr(vit.model, "vision_model", vit.model)
    fast_blk = tower.encoder.layers                                    # :154
    n_blks = len(fast_blk) // 4                                        # :156
    assert len(fast_blk) == n_blks * 4                                 # :157
    y = tower.embeddings(vit_pixels)                                   # :162
    y = tower.pre_layrnorm(y[:, 1:])                                   # :163 class token dropped
    segments = [fast_blk[:n_blks], fast_blk[n_blks:2 * n_blks],
                fast_blk[2 * n_blks:3 * n_blks], fast_blk[3 * n_blks:]]   # :175, 188, 201, 213
    for j, segment in enumerate(segments):
        for blk in segment:
            y = blk(y, None)   # blk(y, None, None)[0] under transformers 4.x
        if j < 3:                                                      # :186, 200, 212
            y = torch.stack([torch.stack(mr_injection(fusion.adapters[j], list(y[s]),
                                                      injected[j][s]))
                             for s in range(y.shape[0])])
    out = []
    for s in range(y.shape[0]):                                        # :225, wrapper:20-43
        slow = src2dst_align(last[s], y.shape[1])
        out.append(torch.stack([linear(y[s, t], fusion.fast_proj) + linear(slow[t],
                                                                           fusion.slow_proj)
                                for t in range(y.shape[1])]))
    return torch.stack(out)


# --- MoVA ----------------------------------------------------------------------------------------
def attention(attn, queries: list[torch.Tensor], keys: list[torch.Tensor]) -> list[torch.Tensor]:
    """nn.MultiheadAttention's computation, one head and one query at a time."""
    c = queries[0].shape[0]
    heads = attn.num_heads
    d = c // heads
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    q = [w[:c] @ x + bias[:c] for x in queries]
    k = [w[c:2 * c] @ x + bias[c:2 * c] for x in keys]
    v = [w[2 * c:] @ x + bias[2 * c:] for x in keys]
    out = []
    for qi in q:
        per_head = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            weights = softmax([torch.dot(qi[sl], kj[sl]) / math.sqrt(d) for kj in k])
            per_head.append(sum(wj * vj[sl] for wj, vj in zip(weights, v)))
        out.append(attn.out_proj.weight @ torch.cat(per_head) + attn.out_proj.bias)
    return out


def mova(fusion, maps: dict[str, torch.Tensor], text: torch.Tensor, text_mask: torch.Tensor,
         routing: torch.Tensor) -> torch.Tensor:
    """routing: the [B, E] mask the router chose (routers are tested on their own)."""
    base = fusion.base
    b = routing.shape[0]
    rows = []
    for s in range(b):
        x = tokens(maps[f"{base.expert}:{base.layer}"][s])
        experts = []
        for name in fusion.expert_names:
            parts = [maps[k][s] for k in maps if k.split(":")[0] == name]
            parts = [p if tuple(p.shape[-2:]) == fusion.grid else resize(p, fusion.grid)
                     for p in parts]
            experts.append(tokens(torch.cat(parts)))
        prompt = [text[s, t] for t in range(text.shape[1]) if text_mask[s, t] > 0]
        pooled_text = sum(prompt) / max(len(prompt), 1)
        chosen = [e for e in range(len(experts)) if routing[s, e] > 0]
        for block in fusion.blocks:
            pooled = torch.cat([sum(x) / len(x), linear(pooled_text, block.text_in)])
            logits = linear(pooled, block.gate)
            if fusion.options.gating == "uniform":
                weights = {e: 1.0 / len(chosen) for e in chosen}
            else:
                weights = dict(zip(chosen, softmax([logits[e] for e in chosen]))) if chosen else {}
            q = [layer_norm(t, block.norm) for t in x]
            update = [torch.zeros_like(t) for t in x]
            for e in chosen:
                kv = [linear(t, block.expert_in[e]) for t in experts[e]]
                extracted = attention(block.cross[e], q, kv)
                update = [u + weights[e] * a for u, a in zip(update, extracted)]
            x = [t + u for t, u in zip(x, update)]
            h = [layer_norm(t, block.norm_self) for t in x]
            x = [t + a for t, a in zip(x, attention(block.self_attn, h, h))]
            mlp = block.mlp
            x = [t + linear(gelu(linear(layer_norm(t, block.norm_mlp), mlp[0])), mlp[2])
                 for t in x]
        rows.append(torch.stack(x))
    return torch.stack(rows)
