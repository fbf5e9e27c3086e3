"""Exact TreeSHAP for the served LightGBM model, from per-leaf tables, compiled with numba.

Reasons need one TreeSHAP per account, and LightGBM's own (``predict(pred_contrib=True)``) runs
the recursive algorithm of Lundberg et al., O(trees x leaves x depth^2) per row: for the default
model (300 trees of depth 5) it costs more than the rest of a scoring request. This module
computes the same numbers with the "v2" idea of FastTreeSHAP (Yang, 2021), O(trees x leaves x
depth) per row after a one-off table per leaf:

* path-dependent TreeSHAP splits each leaf's value over the distinct features on its path, and
  what one feature gets depends only on which of those features the row satisfies (a bit each)
  and on the features' cover fractions (data counts, as LightGBM uses them);
* so for every leaf and every pattern of bits, the contributions are computed once, at load,
  exactly (:func:`_fill_tables`);
* scoring a row walks each tree's nodes once, in preorder, to get every leaf's pattern, and adds
  the table rows it selects (:func:`_contributions`).

The decisions copy LightGBM's (``NumericalDecision`` and ``CategoricalDecision`` in its
``tree.h``, after its row parser has turned |x| <= 1e-35 into 0): missing types None/Zero/NaN
with the default direction, NaN taken as 0 where the split has no missing type, categories as a
set of left-going values, negative or NaN categories right. :meth:`TreeShap.verify` compares with
``pred_contrib`` on rows that take both sides of every split; :func:`fast_treeshap` refuses a
model on any difference above ``TOLERANCE``, and the caller then falls back to LightGBM's own (see
``serving.loader``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
from numba import njit

#: Largest total table (doubles, 8 bytes each) built for one model: 32 MiB per worker. A leaf
#: with d distinct features on its path needs 2**d * d entries, so deep trees do not fit and are
#: explained by LightGBM instead. ``churn train``'s trees (depth 5) need 160 per leaf.
MAX_TABLE_ENTRIES = 1 << 22
#: Largest |ours - pred_contrib| accepted (log-odds); the two differ by summation order only.
TOLERANCE = 1e-9
#: LightGBM's ``kZeroThreshold`` (the float 1e-35f as a double): LightGBM reads any input with
#: |x| at or below it as exactly 0 (it drops such values from the row), and splits on it.
_ZERO = float(np.float32(1e-35))
_MISSING = {"None": 0, "Zero": 1, "NaN": 2}

#: Which code explains: these tables (falling back to LightGBM's when a model does not allow
#: them) or always LightGBM's ``pred_contrib``.
Engine = Literal["tables", "lightgbm"]


def _jit(function):  # type: ignore[no-untyped-def]
    """numba-compile ``function`` (without holding the GIL), cached on disk where possible.

    ``njit(cache=True)`` raises at import when neither the package's directory nor the user's
    cache directory is writable (a read-only container, say); then compile at every start
    instead rather than fail to import.
    """
    compiled = njit(nogil=True)(function)
    try:
        compiled.enable_caching()
    except RuntimeError:
        pass
    return compiled


class Unsupported(ValueError):
    """The model cannot be explained by these tables; the message says why."""


@dataclass(frozen=True)
class TreeShap:
    """Per-leaf TreeSHAP tables of one booster. :meth:`contributions` matches ``pred_contrib``."""

    n_features: int
    #: Every node of every tree in preorder ("entries"), one value per entry:
    parent: np.ndarray       # int32, entry index of the parent (-1 at a root)
    is_left: np.ndarray      # bool, the entry is its parent's left child
    bit: np.ndarray          # int32, internal node: bit of its feature among the path's features
    feature: np.ndarray      # int32, internal node: split feature
    threshold: np.ndarray    # float64, numeric split threshold
    cat_set: np.ndarray      # int32, categorical split: index into cat_start (-1 = numeric)
    default_left: np.ndarray  # bool
    missing: np.ndarray      # int8, 0 None, 1 Zero, 2 NaN
    leaf: np.ndarray         # int32, leaf number of a leaf entry (-1 = internal node)
    tree_start: np.ndarray   # int64, first entry of each tree (+ the end)
    cat_values: np.ndarray   # int64, left-going categories of all categorical splits
    cat_start: np.ndarray    # int64, where each split's categories start (+ the end)
    #: Per leaf: its path's distinct features and where its table starts.
    leaf_feature_start: np.ndarray  # int64 (+ the end)
    leaf_features: np.ndarray       # int32
    table_start: np.ndarray         # int64
    table: np.ndarray               # float64, [leaf][pattern][feature on the path]
    expected_value: float

    @classmethod
    def from_booster(cls, booster: lgb.Booster,
                     max_table_entries: int = MAX_TABLE_ENTRIES) -> TreeShap:
        """Build the tables of ``booster`` (the trees ``predict`` uses by default).

        Raises:
            Unsupported: multi-output or linear trees, an unknown split kind, or tables larger
                than ``max_table_entries``.
        """
        dump = booster.dump_model()
        if int(dump.get("num_tree_per_iteration", 1)) != 1:
            raise Unsupported("more than one tree per iteration (a multiclass model)")
        b = _Builder()
        thresholds = _exact_thresholds(booster)
        for tree in dump["tree_info"]:
            b.add_tree(tree["tree_structure"], thresholds[int(tree["tree_index"])])
            if b.table_entries > max_table_entries:
                raise Unsupported(f"TreeSHAP tables would exceed {max_table_entries:,} entries "
                                  "(trees too deep)")
        return b.finish(int(dump["max_feature_idx"]) + 1)

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """One column per feature plus the expected value (last), like ``pred_contrib``."""
        x = np.ascontiguousarray(matrix, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected rows of {self.n_features} features, got shape {x.shape}")
        out = np.empty((x.shape[0], self.n_features + 1), dtype=np.float64)
        _contributions(x, self.parent, self.is_left, self.bit, self.feature, self.threshold,
                       self.cat_set, self.default_left, self.missing, self.leaf,
                       self.tree_start, self.cat_values, self.cat_start,
                       self.leaf_feature_start, self.leaf_features, self.table_start,
                       self.table, self.expected_value, out)
        return out

    def probe_rows(self, n: int = 64, seed: int = 0) -> np.ndarray:
        """Rows that take both sides of the splits: every feature drawn from its thresholds,
        just above them, the categories its splits name and one more, 0, -1 and NaN."""
        candidates: list[list[float]] = [[0.0, -1.0, math.nan] for _ in range(self.n_features)]
        internal = self.leaf < 0
        for e in np.flatnonzero(internal).tolist():
            f = int(self.feature[e])
            c = int(self.cat_set[e])
            if c < 0:
                t = float(self.threshold[e])
                candidates[f] += [t, float(np.nextafter(t, np.inf))]
            else:
                cats = self.cat_values[self.cat_start[c]:self.cat_start[c + 1]]
                candidates[f] += [float(v) for v in cats] + [float(cats.max()) + 1.0]
        rng = np.random.default_rng(seed)
        rows = np.empty((n, self.n_features), dtype=np.float64)
        for f, values in enumerate(candidates):
            rows[:, f] = rng.choice(np.array(values), size=n)
        rows[0] = math.nan
        rows[1] = 0.0
        return rows

    def verify(self, booster: lgb.Booster, rows: np.ndarray | None = None) -> float:
        """Largest |ours - LightGBM's ``pred_contrib``| over ``rows`` (default: :meth:`probe_rows`)."""
        rows = self.probe_rows() if rows is None else rows
        theirs = np.asarray(booster.predict(rows, pred_contrib=True, num_threads=1))
        return float(np.max(np.abs(self.contributions(rows) - theirs)))


def fast_treeshap(booster: lgb.Booster) -> TreeShap:
    """Tables for ``booster``, checked against ``pred_contrib`` on :meth:`TreeShap.probe_rows`.

    Raises:
        Unsupported: the model cannot be tabled, or the tables disagree with LightGBM.
    """
    tables = TreeShap.from_booster(booster)
    error = tables.verify(booster)
    if not error <= TOLERANCE:  # also catches NaN
        raise Unsupported(f"differs from LightGBM's pred_contrib by {error:.3g} on probe rows")
    return tables


def _exact_thresholds(booster: lgb.Booster) -> dict[int, list[float]]:
    """Numeric thresholds by tree index and split index, from the model text.

    ``dump_model()`` clamps thresholds to +-1e300 (LightGBM's ``AvoidInf``), and LightGBM does
    split at ``inf`` (missing values against all others); the text keeps ``inf`` and every
    other threshold with 17 significant digits, exactly as the booster holds them.
    """
    out: dict[int, list[float]] = {}
    tree = -1
    for line in booster.model_to_string().splitlines():
        if line.startswith("Tree="):
            tree = int(line[5:])
        elif line.startswith("threshold=") and tree >= 0:
            out[tree] = [float(v) for v in line[10:].split()]
        elif line.startswith("end of trees"):
            break
    return out


class _Builder:
    """Flattens ``dump_model()`` trees into :class:`TreeShap`'s arrays."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {k: [] for k in (
            "parent", "is_left", "bit", "feature", "threshold", "cat_set", "default_left",
            "missing", "leaf")}
        self.tree_start = [0]
        self.cat_values: list[int] = []
        self.cat_start = [0]
        self.leaf_values: list[float] = []
        self.leaf_feature_start = [0]
        self.leaf_features: list[int] = []
        self.leaf_zero: list[float] = []
        self.table_entries = 0
        self.expected_value = 0.0

    def _entry(self, **values: Any) -> int:
        for key, column in self.cols.items():
            column.append(values[key])
        return len(self.cols["parent"]) - 1

    def add_tree(self, root: dict[str, Any], thresholds: list[float]) -> None:
        if "split_index" not in root:  # a single leaf: a constant, in the expected value only
            self.expected_value += float(root["leaf_value"])
            return
        root_count = float(root["internal_count"])
        # (node, parent entry, is left child, the path's distinct features as (feature, cover))
        stack: list[tuple[dict[str, Any], int, bool, tuple[tuple[int, float], ...]]] = [
            (root, -1, False, ())]
        while stack:  # preorder, without recursion: unlimited-depth trees are valid models
            node, parent, is_left, path = stack.pop()
            if "split_index" not in node:
                if "leaf_coeff" in node:
                    raise Unsupported("linear trees")
                value = float(node["leaf_value"])
                self.expected_value += float(node["leaf_count"]) / root_count * value
                self._entry(parent=parent, is_left=is_left, bit=0, feature=0, threshold=0.0,
                            cat_set=-1, default_left=False, missing=0,
                            leaf=len(self.leaf_values))
                self.leaf_values.append(value)
                self.leaf_features += [f for f, _ in path]
                self.leaf_zero += [z for _, z in path]
                self.leaf_feature_start.append(len(self.leaf_features))
                self.table_entries += (1 << len(path)) * len(path)
                continue
            feature = int(node["split_feature"])
            kind = node.get("decision_type")
            if kind == "<=":
                cat_set, threshold = -1, thresholds[int(node["split_index"])]
            elif kind == "==":
                cat_set, threshold = len(self.cat_start) - 1, math.nan
                self.cat_values += [int(v) for v in str(node["threshold"]).split("||")]
                self.cat_start.append(len(self.cat_values))
            else:
                raise Unsupported(f"split decision type {kind!r}")
            if node.get("missing_type") not in _MISSING:
                raise Unsupported(f"missing type {node.get('missing_type')!r}")
            names = [f for f, _ in path]
            bit = names.index(feature) if feature in names else len(names)
            entry = self._entry(parent=parent, is_left=is_left, bit=bit, feature=feature,
                                threshold=threshold, cat_set=cat_set,
                                default_left=bool(node["default_left"]),
                                missing=_MISSING[node["missing_type"]], leaf=-1)
            count = float(node["internal_count"])
            for child, left in ((node["right_child"], False), (node["left_child"], True)):
                cover = float(child.get("internal_count", child.get("leaf_count"))) / count
                child_path = list(path)
                if bit < len(path):  # a feature seen higher up: its covers multiply
                    child_path[bit] = (feature, path[bit][1] * cover)
                else:
                    child_path.append((feature, cover))
                stack.append((child, entry, left, tuple(child_path)))
        self.tree_start.append(len(self.cols["parent"]))

    def finish(self, n_features: int) -> TreeShap:
        c = self.cols
        feature_start = np.array(self.leaf_feature_start, dtype=np.int64)
        depth = np.diff(feature_start)
        table_start = np.zeros(len(depth) + 1, dtype=np.int64)
        table_start[1:] = np.cumsum((np.int64(1) << depth) * depth)
        table = np.empty(int(table_start[-1]), dtype=np.float64)
        _fill_tables(np.array(self.leaf_values, dtype=np.float64), feature_start,
                     np.array(self.leaf_zero, dtype=np.float64), table_start, table)
        return TreeShap(
            n_features=n_features,
            parent=np.array(c["parent"], dtype=np.int32),
            is_left=np.array(c["is_left"], dtype=np.bool_),
            bit=np.array(c["bit"], dtype=np.int32),
            feature=np.array(c["feature"], dtype=np.int32),
            threshold=np.array(c["threshold"], dtype=np.float64),
            cat_set=np.array(c["cat_set"], dtype=np.int32),
            default_left=np.array(c["default_left"], dtype=np.bool_),
            missing=np.array(c["missing"], dtype=np.int8),
            leaf=np.array(c["leaf"], dtype=np.int32),
            tree_start=np.array(self.tree_start, dtype=np.int64),
            cat_values=np.array(self.cat_values, dtype=np.int64),
            cat_start=np.array(self.cat_start, dtype=np.int64),
            leaf_feature_start=feature_start,
            leaf_features=np.array(self.leaf_features, dtype=np.int32),
            table_start=table_start, table=table, expected_value=self.expected_value)


@_jit
def _fill_tables(leaf_values, feature_start, zero, table_start, table):  # pragma: no cover
    """table[leaf][pattern][k]: what the k-th distinct feature on the leaf's path gets when the
    row satisfies exactly the features whose bits are set in ``pattern``.

    Shapley value of feature k in a path of d features with covers z and one-fractions o (0/1):
    v (o_k - z_k) sum over S in the others of |S|! (d-1-|S|)! / d! prod_S o_j prod_rest z_j;
    S must lie within the set bits, so the sum runs over the elementary symmetric polynomials of
    the set bits' covers, times the product of the unset bits' covers.
    """
    max_d = 0
    for leaf in range(len(leaf_values)):
        max_d = max(max_d, feature_start[leaf + 1] - feature_start[leaf])
    weight = np.zeros((max_d + 1, max_d + 1))
    for d in range(1, max_d + 1):
        for s in range(d):
            weight[d, s] = math.exp(math.lgamma(s + 1) + math.lgamma(d - s) - math.lgamma(d + 1))
    poly = np.zeros(max_d + 1)
    for leaf in range(len(leaf_values)):
        first = feature_start[leaf]
        d = feature_start[leaf + 1] - first
        value = leaf_values[leaf]
        for pattern in range(1 << d):
            base = table_start[leaf] + pattern * d
            for k in range(d):
                poly[:] = 0.0
                poly[0] = 1.0
                ones = 0
                unset = 1.0
                for j in range(d):
                    if j == k:
                        continue
                    z = zero[first + j]
                    if (pattern >> j) & 1:
                        ones += 1
                        for r in range(ones, 0, -1):
                            poly[r] += poly[r - 1] * z
                    else:
                        unset *= z
                total = 0.0
                for s in range(ones + 1):
                    total += weight[d, s] * poly[ones - s]
                one = float((pattern >> k) & 1)
                table[base + k] = value * (one - zero[first + k]) * unset * total


@_jit
def _contributions(x, parent, is_left, bit, feature, threshold, cat_set, default_left, missing,
                   leaf, tree_start, cat_values, cat_start, feature_start, leaf_features,
                   table_start, table, expected_value, out):  # pragma: no cover
    """Fill ``out`` (rows x features + 1). Tree by tree, then row by row: one tree's tables stay
    in cache across a batch."""
    n_features = x.shape[1]
    goes_left = np.empty(len(parent), np.bool_)
    pattern = np.empty(len(parent), np.int64)
    for r in range(x.shape[0]):
        for j in range(n_features):
            out[r, j] = 0.0
        out[r, n_features] = expected_value
    for t in range(len(tree_start) - 1):
        for r in range(x.shape[0]):
            for e in range(tree_start[t], tree_start[t + 1]):
                p = parent[e]
                if p < 0:
                    bits = -1  # all set
                else:
                    bits = pattern[p]
                    if goes_left[p] != is_left[e]:
                        bits &= ~(1 << bit[p])
                lf = leaf[e]
                if lf >= 0:
                    first = feature_start[lf]
                    d = feature_start[lf + 1] - first
                    base = table_start[lf] + (bits & ((1 << d) - 1)) * d
                    for k in range(d):
                        out[r, leaf_features[first + k]] += table[base + k]
                    continue
                pattern[e] = bits
                value = x[r, feature[e]]
                if -_ZERO <= value <= _ZERO:
                    value = 0.0  # as LightGBM reads its input rows
                c = cat_set[e]
                if c >= 0:  # LightGBM's CategoricalDecision
                    if math.isnan(value) or value < 0 or value >= 2147483648.0:
                        goes_left[e] = False  # NaN, negative or past int: right, as LightGBM
                    else:
                        category = int(value)
                        hit = False
                        for q in range(cat_start[c], cat_start[c + 1]):
                            if cat_values[q] == category:
                                hit = True
                                break
                        goes_left[e] = hit
                else:  # LightGBM's NumericalDecision
                    m = missing[e]
                    if math.isnan(value) and m != 2:
                        value = 0.0
                    if (m == 1 and value == 0.0) or (m == 2 and math.isnan(value)):
                        goes_left[e] = default_left[e]
                    else:
                        goes_left[e] = value <= threshold[e]
    return out
