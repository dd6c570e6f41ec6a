"""``jqodi``: the paper's Algorithms 1–4 (time-energy tree, path search, path scoring).

What the paper specifies (Section IV) and how this module implements it:

* **Alg. 1 (CreateTree)** — root vertices are models, then (model, bits) vertices reached by an
  edge of weight ε_(a,q) when τ_(a,q) ≤ T_max; then state vertices, one per epoch
  k = 1..K^rob, labelled (edge, cut, elapsed time T(k), loss L(k)); an edge of weight e(k) joins a
  state to each next state whose elapsed time stays within the deadline; states at k = K^rob on
  time are linked to Θ. The loss label follows the robust trajectory, interpolated linearly per
  epoch from ``loss.start`` to ``loss.final_robust`` (the paper's γ terms depend on (a, q) only, not
  on the edge or cut, so the label is the same for every state of one epoch).
* **Alg. 2–3 (TRAVERSAL)** — every path from a model vertex to Θ, with weight ε + Σ e(k).
* **Alg. 4 (SelectPath)** — score = weight · risk / opp, lowest wins, with
  ``opp = T_exp / T_rob`` and ``risk = L_rob / L_exp``. The printed algorithm divides the other way
  (opp = T_exp/T_rob "≥ 1", risk = L_exp/L_rob "≥ 1"), but with K^exp ≤ K^rob and a robust loss above
  the expected one both printed ratios are ≤ 1, and risk ≤ 1 would *reward* uncertain paths.
  With opp ≤ 1 in the denominator and risk ≥ 1 in the numerator both factors penalise
  uncertainty, as the text intends. T_rob(p) is the path's total time; T_exp(p) = τ + the time of its
  first K^exp epochs; L_rob(p) = L(K^rob) on the robust trajectory and L_exp(p) = L(K^exp) on the
  expected one (= ``final_robust`` / ``final_expected``); without loss estimates risk = 1.

With a serving demand (the instance's optional ``serving``), a candidate's score is Alg. 4's
score of its fine-tuning path plus requests × its per-request energy (the serving energy no
path changes; Alg. 4's time and loss factors weigh the fine-tuning path only, so a large serving
energy does not turn them into the deciding term), and a candidate that cannot serve within the
latency bound gets no (model, bits) vertex.

Literal enumeration (``mode="literal"``) builds the tree and walks it as written; it is exponential
in K and only for tiny instances. The default ``mode="dp"`` merges equivalent states so the search
is polynomial, as Property 2 claims:

* Vertices with the same epoch k and the same elapsed time have identical subtrees (every action
  is available from every state), so they are merged and only the least-energy one is kept. The
  paper's vertex also names the last (edge, cut); since the set of actions does not depend on it,
  keying on it would only multiply the states without changing any answer, so the merge ignores it.
* The score depends on T_exp, fixed at epoch K^exp, so the DP runs in two phases — epochs
  1..K^exp (A) and K^exp+1..K^rob (B), each "least energy per elapsed time" — and then scores every
  pair (A-end, B-end) on time. Because epochs commute this covers every path.
* Elapsed time is kept in buckets. A path takes K·t_min + Σ (t_o − t_min); only the slack
  U = T_max − τ − K·t_min is cut into ``buckets`` buckets (default 4096) of width w = U / buckets,
  and each option's excess t_o − t_min is rounded to whole buckets (the all-fastest path is exact).
  Paths whose rounded times fall in the same bucket merge (least energy kept), but each bucket
  remembers the *exact* time of the path it kept, and the deadline test and the score use exact
  times, so rounding changes which paths are compared, never whether a plan is on time. The
  cost of merging: a bucket keeps its least-energy path even when a slightly faster, slightly
  costlier one of the same bucket would have combined better; measured effect in docs/planner.md.
  ``mode="dp-exact"`` merges only paths of exactly equal elapsed time (dictionary DP, for checks).
* ``prune_dominated=True`` (default) drops options that are slower *and* costlier than another
  option of the same candidate before building the tree. Such an option can only win through
  opp's reward for a slow start (an artefact of Alg. 4), never by energy.
* Candidates are visited in order of a lower bound of their best score,
  risk·(1 + (K − K^exp)·t_min/T_max)·(ε + LP bound); the search stops when the bound reaches the
  best score found.
* Both phases start from the empty path with the same actions, so the shorter phase is a prefix
  of the longer one: one DP run serves both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np

from jqodi.errors import PlanningError
from jqodi.planner.common import (
    Stopwatch, check_epochs, deadline_limit_s, lp_bound, make_solution, option_arrays,
    pareto_front, search_candidates, serving_energy_j,
)
from jqodi.planner.explain import infeasible_solution
from jqodi.core.instance import Candidate, PlanningInstance, Solution

DEFAULT_BUCKETS = 4096


@dataclass(frozen=True)
class Setting:
    """What Alg. 1–4 need of one candidate: K (tree depth), K^exp (split), risk, budget."""

    cand: Candidate
    K: int
    X: int
    risk: float
    limit_s: float  # deadline (with tolerance)
    options: np.ndarray  # option indices used in the tree
    serve_j: float = 0.0  # requests × per-request energy (0 without a serving demand)


def linear_loss_trajectory(cand: Candidate, which: str) -> list[float] | None:
    """L(k) for k = 0..K on the robust or expected trajectory, *linear* between start and final.

    Used by Algorithm 4's risk factor (sum of expected over sum of robust losses along a path).
    Linear is the documented guess of docs/planner.md: the instance gives only the two end
    points, and a ratio of sums needs no curvature. (The evaluation draws its predicted curves
    with :func:`jqodi.app.evaluation.geometric_loss_trajectory`, which interpolates geometrically
    through the K^exp and K^rob anchors, because that is how measured loss curves decay.)
    """
    K = cand.epochs.get(which)
    if cand.loss is None or K is None:
        return None
    final = cand.loss.final_robust if which == "robust" else cand.loss.final_expected
    return [cand.loss.start + (final - cand.loss.start) * k / K for k in range(K + 1)]


def _setting(instance: PlanningInstance, c: Candidate, epochs: str, prune: bool,
             alg4: bool = True) -> Setting | None:
    K = c.epochs.get(epochs)
    serve = serving_energy_j(instance, c)  # inf: the candidate cannot serve within the latency bound
    if K is None or not c.options or not math.isfinite(serve):
        return None
    limit = deadline_limit_s(instance.deadline_s)
    if c.quantize_time_s > limit:
        return None
    if epochs == "robust":
        X = c.epochs.expected if c.epochs.expected is not None else K
        X = min(max(X, 1), K)
        risk = 1.0
        if c.loss is not None and c.loss.final_expected > 0:
            risk = c.loss.final_robust / c.loss.final_expected
    else:
        X, risk = K, 1.0
    if not alg4:  # rank paths by weight alone: no opportunity (X = K), no risk
        X, risk = K, 1.0
    arr = option_arrays(c)
    idx = pareto_front(arr.time_s, arr.energy_j) if prune else np.arange(len(c.options))
    tmin = float(arr.time_s.min())
    budget = limit - c.quantize_time_s
    idx = idx[arr.time_s[idx] + (K - 1) * tmin <= budget]
    if len(idx) == 0:
        return None
    return Setting(c, K, X, risk, limit, np.sort(idx), serve)


def _score(s: Setting, weight: float, t_rob: float, t_exp: float) -> float:
    """Alg. 4's score of a fine-tuning path, plus the candidate's serving energy (no path changes it)."""
    return (weight * s.risk * t_rob / t_exp if t_exp > 0 else weight * s.risk) + s.serve_j


# ------------------------------------------------------------------------------ literal (Alg. 1-4)
@dataclass
class Tree:
    """The time-energy tree of Alg. 1 for one (model, bits) vertex: ``children[v]`` are edges."""

    vertices: list  # (k, option index or None, T(k), L(k))
    children: list  # vertex -> list of (child vertex, weight)
    theta: set  # vertices linked to Θ


def create_tree(instance: PlanningInstance, s: Setting, max_vertices: int = 200_000) -> Tree:
    """Alg. 1 for one candidate: vertex 0 is (M_a, q) at T = τ; states per epoch; links to Θ."""
    c = s.cand
    traj = linear_loss_trajectory(c, "robust") or [math.nan] * (s.K + 1)
    if len(traj) != s.K + 1:  # planning with K^exp: follow the expected trajectory instead
        traj = linear_loss_trajectory(c, "expected") or [math.nan] * (s.K + 1)
    vertices = [(0, None, c.quantize_time_s, traj[0])]
    children: list[list] = [[]]
    theta = set()
    frontier = [0]
    for k in range(1, s.K + 1):
        nxt = []
        for v in frontier:
            T = vertices[v][2]
            for i in s.options:
                o = c.options[int(i)]
                T2 = T + o.epoch_time_s
                if T2 > s.limit_s:  # line 26/36: infeasible edge
                    continue
                vertices.append((k, int(i), T2, traj[k]))
                children.append([])
                children[v].append((len(vertices) - 1, o.epoch_energy_j))
                nxt.append(len(vertices) - 1)
                if len(vertices) > max_vertices:
                    raise PlanningError(f"literal JQODI tree exceeds {max_vertices} vertices; "
                                        "use mode='dp'")
        frontier = nxt
    for v in frontier:  # lines 38-39: feasible states at K link to Θ
        if vertices[v][0] == s.K and vertices[v][2] <= s.limit_s:
            theta.add(v)
    return Tree(vertices, children, theta)


def traverse(tree: Tree, start_weight: float) -> list[tuple[list[int], float]]:
    """Alg. 2–3: every path from the (model, bits) vertex to Θ with its weight."""
    paths: list[tuple[list[int], float]] = []
    path: list[int] = [0]

    def visit(v: int, w: float):
        if v in tree.theta:
            paths.append((list(path), w))
            return
        for child, weight in tree.children[v]:
            path.append(child)
            visit(child, w + weight)
            path.pop()

    visit(0, start_weight)
    return paths


def _literal(instance: PlanningInstance, s: Setting):
    tree = create_tree(instance, s)
    best = None
    for path, w in traverse(tree, s.cand.quantize_energy_j):
        t_rob = tree.vertices[path[-1]][2]
        t_exp = tree.vertices[path[s.X]][2] if s.X < len(path) else t_rob
        score = _score(s, w, t_rob, t_exp)
        if best is None or (score, w) < (best[0], best[1]):
            opts = [tree.vertices[v][1] for v in path[1:]]
            best = (score, w, opts)
    if best is None:
        return None
    return best[0], best[2]


# ------------------------------------------------------------------------------ exact-merge DP
def _phase_exact(c: Candidate, opts: np.ndarray, n: int, limit: float) -> dict:
    """States after n epochs merged on exact elapsed time: {T: (E, plan tuple)}."""
    states = {0.0: (0.0, ())}
    for _ in range(n):
        new: dict = {}
        for T, (E, plan) in states.items():
            for i in opts:
                o = c.options[int(i)]
                T2 = T + o.epoch_time_s
                if T2 > limit:
                    continue
                key = round(T2, 9)
                E2 = E + o.epoch_energy_j
                if key not in new or E2 < new[key][0]:
                    new[key] = (E2, plan + (int(i),), T2)
        states = {v[2]: (v[0], v[1]) for v in new.values()}
    return states


def _dp_exact(instance: PlanningInstance, s: Setting):
    c = s.cand
    budget = s.limit_s - c.quantize_time_s
    A = _phase_exact(c, s.options, s.X, budget)
    B = _phase_exact(c, s.options, s.K - s.X, budget)
    best = None
    for Ta, (Ea, pa) in A.items():
        for Tb, (Eb, pb) in B.items():
            T = c.quantize_time_s + Ta + Tb
            if T > s.limit_s:
                continue
            w = c.quantize_energy_j + Ea + Eb
            score = _score(s, w, T, c.quantize_time_s + Ta)
            if best is None or (score, w) < (best[0], best[1]):
                best = (score, w, list(pa) + list(pb))
    return None if best is None else (best[0], best[2])


# ------------------------------------------------------------------------------ bucketed DP
def _phase_buckets(d: np.ndarray, u: np.ndarray, e: np.ndarray, n: int, nb: int, snap: int = 0):
    """n epochs over bucket grid: least energy ``V[b]`` of the paths whose rounded excess time is b
    buckets, the exact excess time ``X[b]`` of that least-energy path, per-step choices, and the
    same (V, X) after ``snap`` epochs (both phases start empty, so the shorter is a prefix)."""
    V = np.full(nb + 1, np.inf)
    V[0] = 0.0
    X = np.zeros(nb + 1)
    snapped = (V.copy(), X.copy())
    P = len(d)
    ar = np.arange(nb + 1)
    choices = np.empty((n, nb + 1), dtype=np.int16 if P < 32000 else np.int32)
    M = np.empty((P, nb + 1))
    for step in range(n):
        M.fill(np.inf)
        for j in range(P):
            dj = int(d[j])
            np.add(V[: nb + 1 - dj], e[j], out=M[j, dj:])
        ch = M.argmin(axis=0)
        choices[step] = ch
        V = M[ch, ar]
        X = np.where(np.isfinite(V), X[np.maximum(ar - d[ch], 0)] + u[ch], np.inf)
        if step + 1 == snap:
            snapped = (V, X)
    return V, X, choices, snapped


def _backtrack(choices: np.ndarray, d: np.ndarray, b: int) -> list[int]:
    out = []
    for step in range(len(choices) - 1, -1, -1):
        j = int(choices[step, b])
        out.append(j)
        b -= int(d[j])
    return out


def _dp_buckets(instance: PlanningInstance, s: Setting, buckets: int):
    """Bucketed two-phase DP. Time is measured as *excess over the fastest option*: a path of K
    epochs takes K·t_min + Σ (t_o − t_min), and only the slack U = B − K·t_min is cut into
    ``buckets`` buckets, so the all-fastest path is exact and the grid spends no resolution on
    time every path must spend anyway. Each bucket keeps its least-energy path *and that path's
    exact time*, and the deadline and the score use the exact times: rounding decides which paths
    merge, never whether a path is on time."""
    c = s.cand
    budget = s.limit_s - c.quantize_time_s
    arr = option_arrays(c)
    t, e = arr.time_s[s.options], arr.energy_j[s.options]
    tmin = float(arr.time_s.min())
    slack = budget - s.K * tmin
    if slack < 0:
        return None
    u = np.maximum(t - tmin, 0.0)
    if slack <= 1e-12 * max(budget, 1.0):
        w = 1.0
        d = np.where(u <= 0, 0, buckets + 1).astype(np.int64)
    else:
        w = slack / buckets
        d = np.maximum(np.rint(u / w), 0).astype(np.int64)
    # the cheapest option for each distinct bucket duration (others never win a bucket)
    order = np.lexsort((e, d))
    first = np.ones(len(order), dtype=bool)
    first[1:] = d[order][1:] != d[order][:-1]
    keep = order[first]
    keep = keep[(d[keep] <= buckets) & (u[keep] <= slack)]
    if len(keep) == 0:
        return None
    d, u, e_k, ids = d[keep], u[keep], e[keep], s.options[keep]
    n_a, n_b = s.X, s.K - s.X
    # rounding moves each epoch by ≤ half a bucket, so a path whose exact excess fits the slack
    # can land up to n/2 buckets past the last one: the grid gets that much headroom (the exact
    # time test below still decides)
    n_max = max(n_a, n_b)
    VL, XL, ch, (VS, XS) = _phase_buckets(d, u, e_k, n_max, buckets + (n_max + 1) // 2,
                                          snap=min(n_a, n_b))
    if n_a >= n_b:
        VA, XA, chA, VB, XB, chB = VL, XL, ch, VS, XS, ch[:n_b]
    else:
        VA, XA, chA, VB, XB, chB = VS, XS, ch[:n_a], VL, XL, ch
    a_idx = np.nonzero(np.isfinite(VA) & (XA <= slack))[0]
    b_all = np.nonzero(np.isfinite(VB) & (XB <= slack))[0]
    if len(a_idx) == 0 or len(b_all) == 0:
        return None
    # B-ends: only those not beaten in both exact time and energy matter (time ascending)
    b_idx = b_all[pareto_front(XB[b_all], VB[b_all])]
    xb = XB[b_idx]
    tau, eps = c.quantize_time_s, c.quantize_energy_j
    Tb = (s.K - s.X) * tmin + xb
    # bound the rows first: for A-end a the cheapest B-end on time is the slowest one that fits;
    # its score is an upper bound, and risk·(C_a + its energy) (time ratio ≥ 1) a lower bound
    pos = np.searchsorted(xb, slack - XA[a_idx], side="right") - 1
    fits = pos >= 0
    a_idx, pos = a_idx[fits], pos[fits]
    if len(a_idx) == 0:
        return None
    Ca = eps + VA[a_idx]
    Ta = tau + s.X * tmin + XA[a_idx]
    vb_cheapest = VB[b_idx[pos]]
    upper = float(np.min(s.risk * (Ca + vb_cheapest) * (Ta + Tb[pos]) / Ta))
    rows = s.risk * (Ca + vb_cheapest) <= upper * (1 + 1e-9)
    a_idx, Ca, Ta = a_idx[rows], Ca[rows], Ta[rows]
    # B-ends that cannot beat the bound even with the cheapest A-end are dropped
    vb = VB[b_idx]
    useful = s.risk * (Ca.min() + vb) <= upper * (1 + 1e-9)
    b_idx, xb, Tb, vb = b_idx[useful], xb[useful], Tb[useful], vb[useful]
    # best B-end per A-end, in row chunks (bounded memory)
    best_score = np.full(len(a_idx), np.inf)
    best_col = np.zeros(len(a_idx), dtype=np.int64)
    xa = XA[a_idx]
    step = max(1, 262_144 // max(len(b_idx), 1))
    for lo in range(0, len(a_idx), step):
        sl = slice(lo, lo + step)
        sc = (Ca[sl, None] + vb[None, :]) * (Ta[sl, None] + Tb[None, :])
        sc /= Ta[sl, None]
        sc[xa[sl, None] + xb[None, :] > slack] = np.inf
        col = sc.argmin(axis=1)
        best_col[sl] = col
        best_score[sl] = sc[np.arange(sc.shape[0]), col] * s.risk
    n_try = min(16, len(a_idx))
    top = np.argpartition(best_score, n_try - 1)[:n_try] if len(a_idx) > n_try else \
        np.arange(len(a_idx))
    top = top[np.argsort(best_score[top], kind="stable")]
    for ia in top:  # re-time exactly (fsum); the first almost always passes
        ib = int(best_col[ia])
        if not np.isfinite(best_score[ia]):
            break
        pa = _backtrack(chA, d, int(a_idx[ia])) if s.X else []
        pb = _backtrack(chB, d, int(b_idx[ib])) if s.K - s.X else []
        path = [int(ids[j]) for j in pa + pb]
        T = tau + math.fsum(c.options[i].epoch_time_s for i in path)
        if T <= s.limit_s:
            Texp = tau + math.fsum(c.options[i].epoch_time_s for i in path[: s.X])
            W_ = eps + math.fsum(c.options[i].epoch_energy_j for i in path)
            return _score(s, W_, T, Texp), path
    return None


# ------------------------------------------------------------------------------ solver
def solve_jqodi(instance: PlanningInstance, *, epochs: str = "robust", mode: str = "dp",
                buckets: int = DEFAULT_BUCKETS, prune_dominated: bool = True,
                alg4: bool = True) -> Solution:
    """Algorithms 1–4. ``mode``: ``dp`` (bucketed state merging, default), ``dp-exact`` (merge on
    exact elapsed time) or ``literal`` (build and walk the tree as written; tiny instances only).
    ``alg4=False`` ranks paths by weight (energy) alone instead of Alg. 4's score — a diagnostic
    that separates the effect of the score from that of the tree search."""
    check_epochs(epochs)
    if mode not in ("dp", "dp-exact", "literal"):
        raise PlanningError(f"jqodi mode must be dp, dp-exact or literal, got {mode!r}")
    if int(buckets) < 16:
        raise PlanningError(f"buckets must be ≥ 16, got {buckets}")
    clock = Stopwatch()
    settings = []
    for c in search_candidates(instance):
        s = _setting(instance, c, epochs, prune_dominated, alg4)
        if s is None:
            continue
        arr = option_arrays(c)
        front = pareto_front(arr.time_s, arr.energy_j)
        lp = lp_bound(arr.time_s, arr.energy_j, front, s.K, s.limit_s - c.quantize_time_s)
        if lp is None:
            continue
        # score = W·risk·T_rob/T_exp with W ≥ ε + LP and T_rob/T_exp = 1 + T_B/T_exp ≥
        # 1 + (K − X)·t_min / T_max (the last K − X epochs take at least t_min each)
        ratio = 1.0 + (s.K - s.X) * float(arr.time_s.min()) / s.limit_s
        settings.append((s.risk * ratio * (c.quantize_energy_j + lp.value_j) + s.serve_j, s))
    settings.sort(key=lambda r: r[0])
    best = None
    searched = 0
    for bound, s in settings:
        if best is not None and bound >= best[0] * (1 - 1e-12):
            break
        searched += 1
        if mode == "literal":
            got = _literal(instance, s)
        elif mode == "dp-exact":
            got = _dp_exact(instance, s)
        else:
            got = _dp_buckets(instance, s, int(buckets))
        if got is None:
            continue
        score, path = got
        if best is None or score < best[0]:
            best = (score, s, path)
    if best is None:
        return infeasible_solution(instance, "jqodi", epochs, candidates=search_candidates(instance),
                                   plan_time_ms=clock.ms)
    score, s, path = best
    c = s.cand
    # schedule in execution order: the first K^exp epochs, then the rest (runs grouped)
    counts: list[list[int]] = []
    for part in (path[: s.X], path[s.X:]):
        for i in sorted(set(part), key=lambda i: -c.options[i].epoch_time_s):
            n = part.count(i)
            if counts and counts[-1][0] == i:
                counts[-1][1] += n
            else:
                counts.append([i, n])
    t_exp = c.quantize_time_s + math.fsum(c.options[i].epoch_time_s for i in path[: s.X])
    t_rob = c.quantize_time_s + math.fsum(c.options[i].epoch_time_s for i in path)
    extra = {"score": score, "opp": t_exp / t_rob, "risk": s.risk, "epochs_expected": s.X,
             "time_expected_s": t_exp, "mode": mode, "alg4": alg4, "candidates_searched": searched,
             "plan_time_ms": clock.ms}
    if mode == "dp":
        extra["buckets"] = int(buckets)
    return make_solution("jqodi", "feasible", c, [(i, n) for i, n in counts], epochs, extra, instance)


__all__ = ["solve_jqodi", "create_tree", "traverse", "linear_loss_trajectory", "DEFAULT_BUCKETS"]
