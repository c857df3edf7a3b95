"""The neural interest model: item embeddings with a multi-interest user representation,
learned from the stream in mini-batches with sampled negatives (PyTorch, CPU).

A user is represented by several interest vectors read from their recent sequence
by attentive pooling (one attention head per interest, after ComiRec-SA):
`n_short` interests over the last `short_len` items (what they are into now) and
`n_long` over the last `long_len` (what they keep coming back to). An item's score
is its best match over the interests plus an item bias, so a user into both
horror and musicals gets both rather than their average. Item embeddings are tied
between input and output. Users with no history score by the item bias alone,
which learns popularity: that is the cold start.

Learning: each event becomes a training example (the user's sequence just before
it -> the item), learned once, in mini-batches of `batch_size`, minimizing sampled
softmax over `n_negatives` uniform negatives shared by the batch (uniform, so no
log-Q correction is needed). Optionally (`replay_ratio` > 0) a share of every
mini-batch is replayed from a ring of recent examples; on MovieLens it did not
help at equal learning rate and halves throughput, so it is off by default.
Optionally (`item2item`) the item-to-item score of an internal `ItemCooccurrence`
enters the logit as a feature with a learned gain (see docs/interests.md for what
it measured).
Adam is implemented here on plain tensors so the embedding tables can grow when
new items arrive, and so its moments are part of the snapshot. It is dense Adam:
a lazy variant (only rows with a gradient move) was tried and did worse here.

Deterministic under `seed`: initialization, negatives and replay draws come from
one numpy Generator whose state is snapshotted; torch runs on CPU.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.base import OnlineModel
from engine.models.cooccurrence import ItemCooccurrence, SequenceQuery
from engine.models.recent_items import RecentItems

class _Examples:
    """Rows handed to the internal item-to-item model."""

    def __init__(self, user: np.ndarray, item: np.ndarray, weight: np.ndarray) -> None:
        self.user, self.item, self.weight = user, item, weight.astype(np.float64)


_I2I_EPS = 1e-4  # floor of the item-to-item score inside its log: no links is not -inf


class InterestNet(OnlineModel):
    """Multi-interest sequential recommender learned online.

    update(batch): record with int `user`, `item` (dense indices) and float `weight`;
    events with weight > 0 are positives (weight scales their loss) and enter the
    user's sequence. New users/items grow the tables.
    predict(query): `SequenceQuery` -> (B, n_items) float32 scores.
    """

    def __init__(self, dim: int = 32, n_short: int = 1, n_long: int = 1, short_len: int = 10,
                 long_len: int = 30, n_negatives: int = 768, batch_size: int = 256, replay_size: int = 20000,
                 replay_ratio: float = 0.0, lr: float = 0.03, l2: float = 0.0,
                 item2item: dict[str, Any] | None = None, seed: int = 0) -> None:
        if not (1 <= short_len <= long_len):
            raise ValueError("need 1 <= short_len <= long_len")
        if not 0.0 <= replay_ratio < 1.0:
            raise ValueError("replay_ratio must be in [0, 1)")
        if min(dim, n_short + n_long, n_negatives, batch_size, replay_size) < 1:
            raise ValueError("dim, interests, n_negatives and batch_size must be >= 1")
        self.cfg = dict(dim=int(dim), n_short=int(n_short), n_long=int(n_long), short_len=int(short_len),
                        long_len=int(long_len), n_negatives=int(n_negatives), batch_size=int(batch_size),
                        replay_size=int(replay_size), replay_ratio=float(replay_ratio), lr=float(lr), l2=float(l2),
                        item2item=None if item2item is None else dict(item2item), seed=int(seed))
        self.rng = np.random.default_rng(seed)
        self.recent = RecentItems(long_len)
        self.n_items = 0
        self.steps = 0
        d, K = self.cfg["dim"], self.cfg["n_short"] + self.cfg["n_long"]
        self.p: dict[str, torch.Tensor] = {
            "item_emb": torch.zeros(0, d),
            "item_bias": torch.zeros(0),
            "pos_emb": self._init((long_len, d), 0.05),
            "att_w": self._init((d, K), 1.0 / math.sqrt(d)),
            "att_pos": torch.zeros(long_len, K),
        }
        # Optional item-to-item evidence as an input feature: the logit gains
        # gain * log(s_i2i + eps), the gain learned with the rest. Counts learn
        # from a handful of events what embeddings need thousands of steps for;
        # the net learns how much to trust them and what to add.
        self.i2i = None if item2item is None else ItemCooccurrence(**item2item)
        if self.i2i is not None:
            self.p["i2i_gain"] = torch.ones(1)
        self.m = {k: torch.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: torch.zeros_like(v) for k, v in self.p.items()}
        # Replay buffer of (sequence, item, weight) examples, a ring.
        R = self.cfg["replay_size"]
        self.buf_seq = np.full((R, long_len), -1, dtype=np.int64)
        self.buf_item = np.zeros(R, dtype=np.int64)
        self.buf_w = np.zeros(R, dtype=np.float32)
        self.buf_n = 0  # examples ever written (ring position = buf_n % R)
        # Examples not learned yet: user, item, weight, sequence before the event.
        self.pending: list[np.ndarray] = [np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32),
                                          np.zeros((0, long_len), np.int64)]

    def _init(self, shape: tuple[int, ...], scale: float) -> torch.Tensor:
        return torch.from_numpy(self.rng.normal(0.0, scale, size=shape).astype(np.float32))

    # ------------------------------------------------------------ catalog growth

    def _ensure_items(self, m: int) -> None:
        cap = self.p["item_emb"].shape[0]
        if m > cap:
            new = max(m, 2 * cap, 64)
            d = self.cfg["dim"]
            emb = torch.cat([self.p["item_emb"], self._init((new - cap, d), 0.1)])
            self.p["item_emb"], self.p["item_bias"] = emb, torch.cat([self.p["item_bias"], torch.zeros(new - cap)])
            for st in (self.m, self.v):
                st["item_emb"] = torch.cat([st["item_emb"], torch.zeros(new - cap, d)])
                st["item_bias"] = torch.cat([st["item_bias"], torch.zeros(new - cap)])
        self.n_items = max(self.n_items, m)

    # ------------------------------------------------------------ the network

    def _window(self, L: int) -> torch.Tensor:
        """(K, L) which positions each head may read: short heads the last items only."""
        c = self.cfg
        w = torch.zeros(c["n_short"] + c["n_long"], L, dtype=torch.bool)
        w[c["n_short"]:] = True
        w[: c["n_short"], L - c["short_len"]:] = True
        return w

    def _interests(self, p: dict[str, torch.Tensor], seq: torch.Tensor,
                   rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) sequences -> (B, K, d) interest vectors and (B, K) 'has history' mask.
        `rows`: the sequence's item embeddings (B, L, d), if already looked up."""
        L = seq.shape[1]
        valid = seq >= 0
        if rows is None:
            rows = F.embedding(seq.clamp(min=0), p["item_emb"])
        h = rows + p["pos_emb"][None, :L]
        h = h * valid[..., None]
        # Linear attention logits per head plus a learned per-position bias, so a head
        # can learn to favour recent items; a hidden layer would cost more than the
        # rest of the step. Laid out (B, K, L) so the softmax runs over contiguous memory.
        a = (h @ p["att_w"]).transpose(1, 2) + p["att_pos"][:L].T[None]
        ok = valid[:, None, :] & self._window(L)[None]
        att = torch.softmax(a.masked_fill(~ok, -1e9), dim=2) * ok  # zero rows where a head sees nothing
        return att @ h, ok.any(dim=2)

    def _scores(self, p: dict[str, torch.Tensor], seq: torch.Tensor, items: torch.Tensor,
                i2i: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) scores of `items` (N,) for each row of `seq`: the best-matching interest
        (plus the item-to-item feature `i2i` (B, N), when the model has one)."""
        z, has = self._interests(p, seq)
        s = (z @ p["item_emb"][items].T).masked_fill(~has[..., None], -1e9).amax(dim=1)
        s = torch.where(has.any(dim=1, keepdim=True), s, torch.zeros_like(s))
        s = s + p["item_bias"][items]
        if i2i is not None:
            s = s + p["i2i_gain"] * torch.log(i2i + _I2I_EPS)
        return s

    def _train_logits(self, p: dict[str, torch.Tensor], seq: torch.Tensor, pos: torch.Tensor,
                      neg: torch.Tensor, i2i: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of each row's positive (B,) and of the shared negatives (B, N);
        `i2i` (B, 1 + N): the item-to-item feature of the positive then the negatives.

        As in ComiRec's training, each example uses the one interest closest to its
        positive item against all negatives: the same argmax that ranks at serving
        time, at 1/K of the cost of scoring negatives with every interest.
        """
        B, L = seq.shape
        # One lookup for the sequences, positives and negatives: one scatter backward.
        ids = torch.cat([seq.clamp(min=0).reshape(-1), pos, neg])
        # torch.split rather than slices: slicing's backward zero-fills a full-size
        # gradient per slice, which cost more than the matmuls here.
        e_seq, e_pos, e_neg = torch.split(F.embedding(ids, p["item_emb"]), [B * L, B, len(neg)])
        b_pos, b_neg = torch.split(p["item_bias"][ids[B * L:]], [B, len(neg)])
        z, has = self._interests(p, seq, e_seq.view(B, L, -1))
        k = torch.einsum("bkd,bd->bk", z, e_pos).masked_fill(~has, -1e9).argmax(dim=1)
        v = z[torch.arange(B), k]  # (B, d); all zero for users with no history
        own = (v * e_pos).sum(dim=1) + b_pos
        other = v @ e_neg.T + b_neg[None]
        if i2i is not None:
            f = p["i2i_gain"] * torch.log(i2i + _I2I_EPS)
            own, other = own + f[:, 0], other + f[:, 1:]
        return own, other

    # ------------------------------------------------------------ learning

    def _step(self, seq: np.ndarray, item: np.ndarray, w: np.ndarray) -> float:
        c = self.cfg
        neg = self.rng.integers(0, self.n_items, size=c["n_negatives"])
        params = {k: t.detach().requires_grad_(True) for k, t in self.p.items()}
        seq_t, item_t = torch.from_numpy(seq), torch.from_numpy(item)
        neg_t = torch.from_numpy(neg)
        i2i = None
        if self.i2i is not None:
            cols = np.concatenate([item[:, None], np.broadcast_to(neg, (len(item), len(neg)))], axis=1)
            i2i = torch.from_numpy(self.i2i.predict_columns(seq, cols).astype(np.float32))
        own, other = self._train_logits(params, seq_t, item_t, neg_t, i2i)
        # A negative that is the positive itself is not a negative.
        other = other.masked_fill(neg_t[None] == item_t[:, None], -1e9)
        # Softmax cross-entropy of the positive against [positive, negatives], without
        # materializing the concatenation.
        nll = torch.logaddexp(own, torch.logsumexp(other, dim=1)) - own
        wt = torch.from_numpy(w)
        loss = (nll * wt).sum() / wt.sum()
        if c["l2"] > 0:
            touched = torch.cat([item_t, neg_t]).unique()
            loss = loss + c["l2"] * params["item_emb"][touched].pow(2).sum() / len(item)
        names = list(self.p)
        grads = torch.autograd.grad(loss, [params[k] for k in names])
        self.steps += 1
        b1, b2, eps, lr = 0.9, 0.999, 1e-8, c["lr"]
        bc1, bc2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        with torch.no_grad():
            for k, g in zip(names, grads):
                self.m[k].mul_(b1).add_(g, alpha=1 - b1)
                self.v[k].mul_(b2).addcmul_(g, g, value=1 - b2)
                self.p[k] -= lr * (self.m[k] / bc1) / ((self.v[k] / bc2).sqrt() + eps)
        return float(loss.detach())

    def update(self, batch: Any) -> None:
        """Learn a batch. Examples wait in `pending` until a full mini-batch of new ones
        is there, so the result does not depend on how the stream was cut into
        batches (the user's sequence, and so recommendations, move at once)."""
        user = np.ascontiguousarray(batch.user, dtype=np.int64)
        item = np.ascontiguousarray(batch.item, dtype=np.int64)
        weight = np.ascontiguousarray(batch.weight, dtype=np.float32)
        if len(user) == 0:
            return
        if min(user.min(), item.min()) < 0 or not np.isfinite(weight).all():
            raise ValueError("users/items must be dense indices >= 0 and weights finite")
        pos = weight > 0
        user, item, weight = user[pos], item[pos], weight[pos]
        if len(user) == 0:
            return
        self._ensure_items(int(item.max()) + 1)
        seq = self.recent.sequences_before(user, item)
        self.recent.push(user, item)
        self.pending = [np.concatenate([a, b]) for a, b in zip(self.pending, (user, item, weight, seq))]
        c = self.cfg
        new = max(int(round(c["batch_size"] * (1.0 - c["replay_ratio"]))), 1)  # new examples per step
        while len(self.pending[0]) >= new:
            self._learn_pending(new)

    def flush(self) -> None:
        """Learn the examples still waiting for a full mini-batch (e.g. when the stream idles)."""
        if len(self.pending[0]):
            self._learn_pending(len(self.pending[0]))

    def _learn_pending(self, new: int) -> None:
        c = self.cfg
        R, bs = c["replay_size"], c["batch_size"]
        u, i_new, w_new, s_new = (a[:new] for a in self.pending)
        self.pending = [a[new:] for a in self.pending]
        s_all, i_all, w_all = s_new, i_new, w_new
        have = min(self.buf_n, R)
        if have and c["replay_ratio"] > 0:
            idx = self.rng.integers(0, have, size=max(bs - new, 1))
            s_all = np.concatenate([s_new, self.buf_seq[idx]])
            i_all = np.concatenate([i_new, self.buf_item[idx]])
            w_all = np.concatenate([w_new, self.buf_w[idx]])
        self._step(s_all, i_all, w_all)
        # The new examples join the replay buffer after they were learned once,
        # and the item-to-item counts after they served as features.
        ring = (self.buf_n + np.arange(new)) % R
        self.buf_seq[ring], self.buf_item[ring], self.buf_w[ring] = s_new, i_new, w_new
        self.buf_n += new
        if self.i2i is not None:
            self.i2i.update(_Examples(u, i_new, w_new))

    # ------------------------------------------------------------ queries

    @torch.no_grad()
    def predict(self, query: SequenceQuery) -> np.ndarray:
        seq = self.recent.sequences(query.users) if query.sequences is None else np.asarray(query.sequences)
        L = self.cfg["long_len"]
        seq = seq[:, -L:]
        if seq.shape[1] < L:
            seq = np.concatenate([np.full((len(seq), L - seq.shape[1]), -1), seq], axis=1)
        seq = np.where(seq < self.n_items, seq, -1)
        if self.n_items == 0:
            return np.zeros((len(seq), 0), dtype=np.float32)
        i2i = None
        if self.i2i is not None:
            f = np.zeros((len(seq), self.n_items), dtype=np.float32)
            raw = self.i2i.predict(SequenceQuery(np.full(len(seq), -1), seq))
            f[:, : raw.shape[1]] = raw
            i2i = torch.from_numpy(f)
        s = self._scores(self.p, torch.from_numpy(np.ascontiguousarray(seq, dtype=np.int64)),
                         torch.arange(self.n_items), i2i)
        return s.numpy()

    @torch.no_grad()
    def interest_vectors(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, K, d) interest vectors (first n_short short-term, then long-term) and (B, K) validity."""
        seq = torch.from_numpy(np.where(self.recent.sequences(users) < self.n_items, self.recent.sequences(users), -1))
        z, has = self._interests(self.p, seq)
        return z.numpy(), has.numpy()

    # ------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        n = min(self.buf_n, self.cfg["replay_size"])
        return {
            "cfg": dict(self.cfg), "n_items": self.n_items, "steps": self.steps,
            "rng": self.rng.bit_generator.state,
            "params": {k: t.numpy().copy() for k, t in self.p.items()},
            "adam_m": {k: t.numpy().copy() for k, t in self.m.items()},
            "adam_v": {k: t.numpy().copy() for k, t in self.v.items()},
            "buf_seq": self.buf_seq[:n].copy(), "buf_item": self.buf_item[:n].copy(),
            "buf_w": self.buf_w[:n].copy(), "buf_n": self.buf_n, "recent": self.recent.snapshot(),
            "i2i": None if self.i2i is None else self.i2i.snapshot(),
            "pending": [a.copy() for a in self.pending],
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.__init__(**state["cfg"])
        self.rng.bit_generator.state = state["rng"]
        self.n_items, self.steps = int(state["n_items"]), int(state["steps"])
        self.p = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state["params"].items()}
        self.m = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state["adam_m"].items()}
        self.v = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state["adam_v"].items()}
        n = len(state["buf_item"])
        self.buf_seq[:n], self.buf_item[:n], self.buf_w[:n] = state["buf_seq"], state["buf_item"], state["buf_w"]
        self.buf_n = int(state["buf_n"])
        self.recent.restore(state["recent"])
        if self.i2i is not None:
            self.i2i.restore(state["i2i"])
        self.pending = [np.array(a) for a in state["pending"]]
