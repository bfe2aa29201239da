//! Maximum-weight general matching, a bit-exact port of the reference simulator's
//! `_Blossom_Same` (Edmonds blossom, O(n³), UOJ #81 template style, with f64 weights).
//!
//! The Muri reference pairs jobs with this exact algorithm, and many pairs have equal
//! weights, so *which* of several optimal matchings it returns decides the schedule and
//! therefore the golden numbers. This module therefore copies the reference step by step,
//! including its deviations from the integer template (see `simulator-spec.md` §5.5):
//!
//! - vertices are `1..=n`, blossoms `n+1..=n_x`; a new blossom reuses the first free id;
//! - weights and dual labels are `f64`, every label starts at the largest weight;
//! - comparisons go through `my_cmp`, a tolerance compare that never returns −1;
//! - a blossom's contents enter the BFS queue breadth-first (explicit FIFO), and
//!   `set_match` / `augment` use explicit FIFOs too;
//! - `set_st` stops descending at `x < n` (not `x <= n`), `get_pr` reverses `flower[1..]`
//!   when the position is odd;
//! - blossom edges are copies `(u, v, w)` of member edges, and the slack of an edge is
//!   always recomputed from the *original* weight of its end points;
//! - every loop runs in ascending index order, with its bound fixed when it starts.
//!
//! Vertex ids, edge storage and queues are flat, reused buffers so that the simulator,
//! which solves thousands of instances, does not allocate per call.
//!
//! # Optimisations
//!
//! Under contention Muri matches 256 one-GPU candidates at every event, so this solver is
//! most of Muri's run time (about 90 % on trace4). None of the shortcuts below changes a
//! result: each one was accepted only with every `job.csv` of the 8 traces × Muri-S/Muri-L
//! byte-identical and every recorded solve replaying to the same mates.
//!
//! - **Compact blossom entries.** A blossom's entries towards a vertex are stored as the
//!   one inner vertex they come from (weights are read back from the matrix): eight times
//!   smaller tables, which mattered for cache misses rather than instructions. The
//!   reference's `flower_from` table follows from a parent pointer per id.
//! - **Class tables and twin scans.** Muri builds its graphs with
//!   [`WeightMatrix::fill_from_classes`] (weights depend only on profile classes). The
//!   scan of an outer vertex whose twin (same class, same label) was just scanned is
//!   replayed, plus the updates the twin could not cover, instead of repeated; one free
//!   vertex per class stands for its twins in `set_slack`.
//! - **Column groups.** Vertices that have had the same class and, bit for bit, the same
//!   label at every blossom build form a group (split, never merged, when labels diverge).
//!   Outside a blossom their entry is the same inner vertex, so a new blossom's vertex
//!   entries are computed once per group, and `set_slack` weighs one candidate per group
//!   in ascending order (the reference's first-wins rule).
//! - **Dual steps of 0** (97 % of the steps on trace4) change no label (no label is ever
//!   −0), so they skip the label and slack-refresh loops. Every slack edge stored with
//!   `dist <= 0` and every inner blossom labelled at `lab <= 0` is listed as it happens,
//!   so such a step, its tight edges and its zero blossoms are found from those lists;
//!   the full pass runs only when the lists hold nothing `<= 0`.
//! - **Blossom marks in the scan.** All members of a blossom offer it the same slack, so a
//!   scan marks the blossoms it reaches and updates each once after the loop.
//! - **Four-lane scans** (`matching/row_scan.rs`): where the CPU has AVX2 (detected at run time) a
//!   row is scanned four vertices at a time, each lane doing the plain loop's `f64`
//!   operations in the same order with ordered compares; a group holding a tight edge it
//!   must act on goes back to the plain loop.
//! - **Lazy blossom–blossom entries.** An entry between two blossoms depends only on the
//!   flower as built, the members' entries and the labels then (a snapshot per nonzero
//!   dual step), and 92 % are never read (they belong to nested blossoms), so `bb_entry`
//!   computes each on first read.
//!
//! Checks: `tests/matching.rs` compares class-table graphs with the plain port and
//! requires every shortcut to fire; debug builds redo every shortcut the plain way and
//! assert equality (the eager blossom–blossom table, the full dual-step pass, the plain
//! scan on copies); `MURI_RECORD_MATCHINGS=FILE` (in `policy/muri.rs`) records every
//! solve as a [`RecordedSolve`] line, and `MATCH_REPLAY=FILE` with the `matching` bench
//! replays them and checks the mates (`MATCH_REPLAY_PLAIN=1` also against the plain port
//! via [`WeightMatrix::without_classes`]).
//!
//! Where the time goes now (perf on the trace4 replay): the four-lane scan ~16 %, a new
//! blossom's column-group entries ~8 %, `set_slack` ~7 %, `set_st` ~6 %, blossom
//! expansion ~6 %, twin replays ~11 %. Tried and dropped, each slower on the replay:
//! branch-free slack updates and dual-step minima, the scan's weights read from the class
//! table, a bitset of top-level blossoms, a scan that skips classes without tight edges.
//! The reference's tie-breaking rules out incremental or warm-started matchings.

use std::collections::VecDeque;

mod row_scan;

/// Relative tolerance of the reference's `my_cmp` (`math.isclose(x, y, rel_tol=1e-5)`).
const REL_TOL: f64 = 1e-5;

/// Python's `math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0)`, branch for branch.
fn is_close(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let diff = (b - a).abs();
    diff <= (REL_TOL * b).abs() || diff <= (REL_TOL * a).abs()
}

/// The reference's tolerance compare: 0 when `x` and `y` are close, 1 when `x > y`, and
/// **also 0 when `x < y`** (it never returns −1). Kept as is because every test the
/// reference makes with it (`== 0`, `<= 0`) depends on that asymmetry: e.g. an edge is
/// "tight" when its slack is `<= 0`, not only `== 0`.
fn my_cmp(x: f64, y: f64) -> i32 {
    if is_close(x, y) {
        0
    } else if x > y {
        1
    } else {
        0
    }
}

/// `my_cmp(x, 0.0) == 0`, reduced: `is_close(x, 0)` only holds for `x == 0` (a nonzero
/// `|x|` is never `<= 1e-5 |x|`), so the compare is 0 exactly when `x > 0` fails (NaN
/// included). The hot loops test this for every edge, so the reduced form matters.
#[inline]
#[allow(clippy::neg_cmp_op_on_partial_ord)] // NaN must count as "not positive"
fn not_positive(x: f64) -> bool {
    !(x > 0.0)
}

/// Python's two-argument `min(a, b)`: keeps `a` unless `b < a` (differs from
/// [`f64::min`] only for NaN, which is kept for fidelity).
fn py_min(a: f64, b: f64) -> f64 {
    if b < a {
        b
    } else {
        a
    }
}

/// Weight matrix over vertices 0..n; `w(u,v) == 0.0` means "no edge".
///
/// Entries are kept for *ordered* pairs: the reference reads `w(u,v)` and `w(v,u)`
/// separately, and the simulator's weights can differ between them in the last bit, so
/// the matrix is deliberately not reduced to a triangle. It is stored either densely
/// (built entry by entry with [`Self::set`]) or as a class table (built by
/// [`Self::fill_from_classes`]), which the solver expands itself.
#[derive(Clone, Debug, Default)]
pub struct WeightMatrix {
    n: usize,
    /// Dense entries, row by row; empty while the matrix is a class table.
    w: Vec<f64>,
    /// `class[u]` when the matrix was built by [`Self::fill_from_classes`]: vertices of one
    /// class are *twins* (equal rows and columns outside their own pair), which lets the
    /// solver skip provably redundant scans. Empty when entries were set one by one.
    class: Vec<u32>,
    /// `table[a * classes + b]`: the weight between classes `a` and `b` (0 = no edge).
    table: Vec<f64>,
    classes: usize,
}

impl WeightMatrix {
    /// An `n × n` matrix with every entry zero (no edges).
    pub fn new(n: usize) -> Self {
        let mut g = Self::default();
        g.reset(n);
        g
    }

    /// Makes this an `n × n` matrix with every entry zero, reusing the allocation.
    pub fn reset(&mut self, n: usize) {
        self.n = n;
        self.w.clear();
        self.w.resize(n * n, 0.0);
        self.class.clear();
        self.table.clear();
        self.classes = 0;
    }

    /// Makes this the `n × n` matrix with `w(u, v) = weight(class_of[u], class_of[v])` for
    /// `u != v` (`None` = no edge) and zeros on the diagonal, reusing the allocation.
    /// `weight` is asked once per class pair.
    ///
    /// Remembering the classes lets [`BlossomMatcher`] recognise twin vertices, for which
    /// it can skip scans whose outcome is already known; results are identical either way.
    pub fn fill_from_classes(
        &mut self,
        class_of: &[u32],
        mut weight: impl FnMut(u32, u32) -> Option<f64>,
    ) {
        self.n = class_of.len();
        self.w.clear();
        let c = class_of.iter().max().map_or(0, |&m| m as usize + 1);
        self.classes = c;
        self.table.clear();
        for a in 0..c as u32 {
            for b in 0..c as u32 {
                self.table.push(weight(a, b).unwrap_or(0.0));
            }
        }
        self.class.clear();
        self.class.extend_from_slice(class_of);
    }

    /// The same weights stored densely, without classes: the solver then takes the plain
    /// path, step for step the reference's, which makes it the oracle for the twin
    /// shortcuts in tests and in the replay benchmark.
    pub fn without_classes(&self) -> WeightMatrix {
        let n = self.n;
        WeightMatrix {
            n,
            w: (0..n * n).map(|i| self.get(i / n, i % n)).collect(),
            ..WeightMatrix::default()
        }
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the matrix has no vertices.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Sets the weight of the ordered pair `(u, v)`.
    ///
    /// # Panics
    /// If `u` or `v` is not below [`len`](Self::len).
    pub fn set(&mut self, u: usize, v: usize, w: f64) {
        assert!(u < self.n && v < self.n, "vertex out of range");
        if self.is_class_table() {
            // A single entry may break the twin property: expand and forget the classes.
            *self = self.without_classes();
        }
        self.w[u * self.n + v] = w;
    }

    /// Weight of the ordered pair `(u, v)`.
    ///
    /// # Panics
    /// If `u` or `v` is not below [`len`](Self::len).
    pub fn get(&self, u: usize, v: usize) -> f64 {
        assert!(u < self.n && v < self.n, "vertex out of range");
        if !self.is_class_table() {
            self.w[u * self.n + v]
        } else if u == v {
            0.0
        } else {
            let (cu, cv) = (self.class[u] as usize, self.class[v] as usize);
            self.table[cu * self.classes + cv]
        }
    }

    fn is_class_table(&self) -> bool {
        !self.class.is_empty()
    }
}

/// One entry of the reference's `edge[x][y]` table: the end points `(u, v)` of the
/// underlying vertex edge and its weight `w`. Blossom rows/columns hold *copies* of member
/// entries. The reference's `dist` reads the *original* weight of `(u, v)`
/// (`edge[e.u][e.v].w`); an entry's `w` only differs from it while the reference has reset
/// it to 0 during a blossom build, and every such entry is overwritten by that build (its
/// first member always copies; see [`BlossomMatcher::build_blossom_edges`]). So `w` is
/// both. Entries between two blossoms store it and travel as copies; entries between a
/// blossom and a vertex are rebuilt from their inner vertex (see `BlossomMatcher::inner`),
/// reading `w` from the matrix.
#[derive(Clone, Copy, Debug, Default)]
struct Edge {
    u: u32,
    v: u32,
    w: f64,
}

impl Edge {
    /// The reference's `w` tested for `> 0` (an entry with `w <= 0` is "no edge").
    #[inline]
    fn is_live(self) -> bool {
        self.w > 0.0
    }
}

/// No column group (see [`BlossomMatcher::refine_column_groups`]).
const NO_GROUP: u32 = u32::MAX;

/// The `{u: 0, v: 0, w: 0}` entry the reference appends when it grows the table.
const EMPTY_EDGE: Edge = Edge { u: 0, v: 0, w: 0.0 };

/// Labels of the reference's `S` array: -1 unlabeled, 0 outer ("S"), 1 inner ("T").
const UNLABELED: i8 = -1;
const OUTER: i8 = 0;
const INNER: i8 = 1;

/// How many vertex scans one solve replaced by a twin's (see
/// [`BlossomMatcher::twin_scans_skipped`]), by the kind of vertex scanned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwinSkips {
    /// Free vertices that are their own top-level id (the roots of every phase).
    pub free_roots: u64,
    /// Matched vertices and vertices inside blossoms, which tree growth made outer.
    pub other_vertices: u64,
}

/// Reusable solver: keeps its buffers between calls (the simulator calls it thousands of times).
///
/// Ids follow the reference: 0 is "none", `1..=n` are vertices, `n+1..=n_x` blossoms.
/// Tables are preallocated for `stride = n + n/2 + 2` ids instead of growing by one id
/// per new blossom as the reference does: live blossoms (`st[b] != 0`) form a laminar
/// family whose members have at least 3 children, so there are at most `(n-1)/2` of them
/// and the first-free-id rule never hands out an id above `n + n/2`.
#[derive(Debug, Default)]
pub struct BlossomMatcher {
    n: usize,
    n_x: usize,
    stride: usize,
    /// The reference's `edge[x][y]` is split by where it lives (see [`Self::e`]): the
    /// vertex block (`x, y <= n`) is never modified after loading, so it is stored as the
    /// weights alone, `wv[x * (n + 1) + y]`, and transposed in `wt[y * (n + 1) + x]` for
    /// column scans. Between a blossom `b` and a vertex `x` both entries are copies of
    /// the same member's edges, `edge[b][x] = (i, x, w(i, x))` and `edge[x][b] = (x, i,
    /// w(x, i))` for one vertex `i` inside `b`, so only `i` is stored:
    /// `inner[(b - n - 1) * (n + 1) + x]` (see [`Self::row_edge`], [`Self::col_edge`]).
    /// That keeps the blossom part 8 times smaller than full entries, which matters for
    /// the cache: at the paper's 256 vertices it is about 130 KiB instead of 1 MiB.
    /// Entries between two blossoms `x, y` are full, `bb[(x - n - 1) * nb + (y - n - 1)]`
    /// with `nb = stride - n - 1`. Every scan of a row or a column is then contiguous.
    wv: Vec<f64>,
    wt: Vec<f64>,
    inner: Vec<u32>,
    bb: Vec<Edge>,
    /// Blossom–blossom entries are computed on first read (see [`Self::bb_entry`]):
    /// `bb_stamp[i] == born[p]` when `bb[i]` holds the entry that `p`, the later-born
    /// of its two ids, computed for the other; anything else means "not computed yet".
    bb_stamp: Vec<u32>,
    /// Per blossom id: its birth number in this solve (0 = never built), its flower as
    /// built (later rotations and reversals must not change the entries' tie order),
    /// and which [`Self::lab_snapshots`] held the vertex labels then.
    born: Vec<u32>,
    births: u32,
    built_flower: Vec<Vec<u32>>,
    lab_version: Vec<u32>,
    /// Vertex labels `0..=n` at the builds that deferred entries, `n + 1` per snapshot:
    /// at most one per nonzero dual step (few per solve); `snapshot_current` while the
    /// last one still equals the labels.
    lab_snapshots: Vec<f64>,
    snapshot_current: bool,
    /// Debug builds also compute every blossom–blossom entry eagerly, as the reference
    /// does, and check each lazily computed one against it.
    #[cfg(debug_assertions)]
    bb_eager: Vec<Edge>,
    /// The blossom whose flower lists this id, 0 for a top-level id: the reference's
    /// `flower_from[b][x]` table follows from it (see [`Self::ff`]), so it is not stored.
    parent: Vec<u32>,
    lab: Vec<f64>,
    mate: Vec<usize>,
    st: Vec<usize>,
    pa: Vec<usize>,
    slack: Vec<usize>,
    /// `slack_dist[x] == dist(edge[slack[x]][x])` whenever `slack[x] != 0`. A slack
    /// distance only depends on vertex labels (edge end points are vertices) and on the
    /// entry `edge[slack[x]][x]`; the cache is refreshed after every dual step (by
    /// [`Self::scan_slack_edges`]) and the entry only changes for a new blossom, whose
    /// slack is then recomputed. So the cached value is the very f64 the reference would
    /// recompute.
    slack_dist: Vec<f64>,
    label: Vec<i8>,
    /// The vertices of the blossom [`Self::inside_of`] as bits, while it is being built
    /// (see [`Self::set_st_new_blossom`]); `inside_of` is 0 otherwise.
    inside_bits: Vec<u64>,
    inside_of: usize,
    /// Scratch of [`Self::compute_delta`]: the top-level ids whose slack edge is tight.
    tight_slacks: Vec<u32>,
    /// This phase's ids that may have a slack edge with `dist <= 0`, and blossoms that
    /// may be inner with `lab <= 0`: every such id is listed (some listed ones no longer
    /// qualify), which lets [`Self::compute_delta`] find a step `<= 0` without a full
    /// pass (see [`Self::delta_from_lists`]).
    nonpositive_slacks: Vec<u32>,
    zero_inners: Vec<u32>,
    /// The blossom the last [`Self::add_blossom`] formed.
    new_blossom: usize,
    /// Scratch of [`Self::scan_until_tight`]: the top-level blossoms one scan reached
    /// (mark 0, which nothing reads, is the four-lane scan's sink for other lanes).
    reached: Vec<u8>,
    /// The top-level blossom ids (`st[b] == b`), ascending; recomputed before a twin's
    /// blossom check (see [`Self::same_blossom_slacks`]) when `tops_dirty` (set whenever
    /// `st` changes).
    tops: Vec<usize>,
    tops_dirty: bool,
    /// Scratch of [`Self::build_blossom_edges`]: the slack and the weight of each new
    /// vertex entry (the weight tells whether it is live).
    dist_scratch: Vec<f64>,
    weight_scratch: Vec<f64>,
    vis: Vec<u64>,
    t: u64,
    flower: Vec<Vec<usize>>,
    /// The main BFS queue (`q`), popped from `q_head`.
    q: Vec<usize>,
    q_head: usize,
    /// Scratch FIFO of `q_push`, stack of `set_st`, FIFO of `set_match`.
    push_fifo: VecDeque<usize>,
    st_stack: Vec<usize>,
    match_fifo: VecDeque<(usize, usize)>,
    /// Twin class of each vertex (see [`WeightMatrix::fill_from_classes`]); empty when
    /// the input has no classes. Used by [`Self::scanned_twin`].
    class: Vec<u32>,
    /// Per class: the last vertex whose scan (full, or replayed from a twin's) acted on
    /// nothing, the [`Self::epoch`] it was scanned in and the length of
    /// [`Self::relabeled`] then.
    scanned: Vec<(u32, u64, u32)>,
    /// Bumped by every step that changes duals, blossoms or the matching, so a
    /// [`Self::scanned`] entry is only trusted while the state is as it left it.
    epoch: u64,
    /// Top-level ids labeled (and their slack reset) by tree growth during this epoch,
    /// in order: the only state a later twin's scan sees differently.
    relabeled: Vec<u32>,
    /// Scratch of [`Self::twin_candidate`]: ids inside one top-level id.
    members: Vec<usize>,
    /// Scratch of [`Self::update_slack_from_twin`]: the slack updates to apply.
    twin_updates: Vec<(usize, f64)>,
    /// Bit `u`: vertex `u` became outer during this phase (see [`Self::enqueue`]).
    outer_bits: Vec<u64>,
    /// Bit `u` cleared: `u` is a free twin that an earlier free twin stands for in
    /// [`Self::set_slack`] (see [`Self::mark_stand_ins`]).
    stand_in_bits: Vec<u64>,
    /// For a free vertex, the next free twin whose bit is cleared, 0 if none.
    next_free_twin: Vec<u32>,
    /// Scratch of [`Self::expand_class_table`]: the sanitized table and its transpose.
    table_scratch: Vec<f64>,
    /// Bit `b - n - 1`: blossom id `b <= n_x` is free (`st[b] == 0`, expanded), so
    /// [`Self::alloc_blossom`] finds the first free id without scanning `st`.
    free_ids: Vec<u64>,
    /// Scratch of [`Self::mark_stand_ins`]: per class, its first and last free twin.
    class_chain: Vec<(u32, u32)>,
    /// Column groups of a class table (see [`Self::refine_column_groups`]): `col_group[x]`
    /// for each vertex `x`; per group its least member, its label bits, the head of the
    /// groups split off it in this pass and the next of those; per group, scratch of a
    /// blossom build: a member outside the blossom and the group's entry.
    col_group: Vec<u32>,
    group_rep: Vec<u32>,
    group_lab: Vec<u64>,
    group_split: Vec<u32>,
    split_next: Vec<u32>,
    group_outside: Vec<u32>,
    group_inner: Vec<u32>,
    /// Labels changed since the column groups were last refined.
    groups_stale: bool,
    /// Per group, its members as a bitset of `n / 64 + 1` words.
    group_bits: Vec<u64>,
    /// Scratch of [`Self::best_slack_edge_grouped`]: each group's first candidate.
    group_firsts: Vec<u32>,
    /// The last dual step changed labels, so [`Self::slack_dist`] must be refreshed.
    slack_dists_stale: bool,
    /// Some vertex in [`Self::outer_bits`] has `lab <= 0`, which ends the matching at the
    /// next dual step (see [`Self::apply_zero_delta`]).
    outer_nonpositive: bool,
    /// Scratch of [`Self::slack_candidates`]: the candidate bits for one `set_slack`.
    candidate_scratch: Vec<u64>,
    /// Scans replaced by a twin's during the last solve (see [`Self::twin_scans_skipped`]).
    twin_skips: TwinSkips,
    /// The reference's `w_max`, computed by [`Self::load`].
    w_max: f64,
    /// Row scans run four lanes at a time (where the CPU can, see [`row_scan`]) unless
    /// [`Self::set_plain_scans`] asked for the plain loop; `simd` is the choice made.
    plain_scans: bool,
    simd: bool,
    /// Remaining steps of the outer loops (see [`BlossomMatcher::spend`]).
    budget: u64,
    aborted: bool,
}

impl BlossomMatcher {
    /// An empty solver; buffers grow on first use and are reused afterwards.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns `mate[u]` (0-based) for every vertex; `Some(v)` only when mate is mutual.
    ///
    /// An entry is an edge when it is finite and `> 0`; anything else (0, negative, NaN,
    /// infinite) and the diagonal are read as 0.0, as the reference only ever stores
    /// positive weights off the diagonal. With no edge at all nothing is matched.
    pub fn solve(&mut self, g: &WeightMatrix) -> Vec<Option<usize>> {
        let has_edge = self.load(g);
        if has_edge {
            self.init_duals();
            while self.matching() {}
        }
        self.mates()
    }

    /// Makes every row scan use the plain loop even where the CPU has AVX2 (for tests
    /// and benchmarks: both give the same results, which debug builds check scan by scan).
    pub fn set_plain_scans(&mut self, plain: bool) {
        self.plain_scans = plain;
    }

    /// How many column groups the last [`solve`](Self::solve) of a class table ended with
    /// (it starts with one per class; see `refine_column_groups`), 0 without classes.
    pub fn column_groups(&self) -> usize {
        if self.col_group.is_empty() {
            0
        } else {
            self.group_rep.len()
        }
    }

    /// How many vertex scans the last [`solve`](Self::solve) replaced by a twin's (only
    /// with classes, see [`WeightMatrix::fill_from_classes`]); for tests and benchmarks.
    pub fn twin_scans_skipped(&self) -> TwinSkips {
        self.twin_skips
    }

    // ----- setup ------------------------------------------------------------------------

    /// Loads `g` into the vertex block of the edge table and resets the per-instance state
    /// the reference builds at the start of `blossom_one_round`. Returns whether any edge
    /// exists (the reference's `edge_cnt > 0`).
    fn load(&mut self, g: &WeightMatrix) -> bool {
        let n = g.len();
        self.n = n;
        self.n_x = n;
        self.stride = n + n / 2 + 2;
        let ids = self.stride;
        let n1 = n + 1;
        // Blossom rows and columns are initialised when their id is first handed out
        // (`init_new_id`), as in the reference, so stale contents are never read.
        let nb = ids - n1;
        if self.inner.len() < nb * n1 {
            self.inner.resize(nb * n1, 0);
        }
        if self.bb.len() < nb * nb {
            self.bb.resize(nb * nb, EMPTY_EDGE);
            self.bb_stamp.resize(nb * nb, 0);
            #[cfg(debug_assertions)]
            self.bb_eager.resize(nb * nb, EMPTY_EDGE);
        }
        // Birth numbers restart with every solve, so stale stamps must go.
        self.bb_stamp[..nb * nb].fill(0);
        self.born.clear();
        self.born.resize(ids, 0);
        self.births = 0;
        self.built_flower.resize_with(ids, Vec::new);
        self.lab_version.resize(ids, 0);
        self.lab_snapshots.clear();
        self.snapshot_current = false;
        // Rows and columns `1..=n` are written below; id 0's stay zero.
        self.wv.resize(n1 * n1, 0.0);
        self.wt.resize(n1 * n1, 0.0);
        for buf in [&mut self.wv, &mut self.wt] {
            buf[..n1].fill(0.0);
            buf.iter_mut().step_by(n1).for_each(|w| *w = 0.0);
        }
        self.w_max = if g.is_class_table() {
            self.expand_class_table(g)
        } else {
            self.copy_dense(g)
        };
        let w_max = self.w_max;
        let has_edge = w_max > 0.0;
        self.simd = !self.plain_scans && row_scan::simd_available();
        self.class.clear();
        self.class.extend_from_slice(&g.class);
        self.scanned.clear();
        self.scanned.resize(g.classes, (0, 0, 0));
        self.load_column_groups(g);
        self.twin_skips = TwinSkips::default();
        self.t = 0;
        self.vis.clear();
        self.vis.resize(ids, 0);
        self.mate.clear();
        self.mate.resize(ids, 0);
        has_edge
    }

    /// Copies a dense `g` into rows/columns `1..=n` (sanitized, zero diagonal) and its
    /// transpose; returns the reference's `w_max`, the largest entry of those rows,
    /// zeros included.
    fn copy_dense(&mut self, g: &WeightMatrix) -> f64 {
        let (n, n1) = (self.n, self.n + 1);
        let mut w_max = f64::NEG_INFINITY;
        for (u, row) in (1..=n).zip(g.w.chunks_exact(n.max(1))) {
            let dst = &mut self.wv[u * n1 + 1..(u + 1) * n1];
            for (v, (d, &w)) in (1..).zip(dst.iter_mut().zip(row)) {
                *d = if u == v { 0.0 } else { sanitize(w) };
                w_max = w_max.max(*d);
            }
        }
        for u in 1..=n {
            for v in 1..=n {
                self.wt[v * n1 + u] = self.wv[u * n1 + v];
            }
        }
        w_max
    }

    /// [`Self::copy_dense`] for a class table: both the rows and the transposed rows are
    /// gathered from the (sanitized) table, so no strided transpose is needed, and
    /// `w_max` is the largest table entry some vertex pair uses.
    fn expand_class_table(&mut self, g: &WeightMatrix) -> f64 {
        let (n, n1, c) = (self.n, self.n + 1, g.classes);
        let mut table = std::mem::take(&mut self.table_scratch);
        table.clear();
        table.extend(g.table.iter().map(|&w| sanitize(w)));
        // The transposed table follows the original, so `wt` rows are contiguous gathers too.
        for a in 0..c {
            for b in 0..c {
                table.push(table[b * c + a]);
            }
        }
        let (forward, backward) = table.split_at(c * c);
        for (u, &cu) in (1..).zip(&g.class) {
            let cu = cu as usize;
            let (wv_row, wt_row) = (
                &mut self.wv[u * n1 + 1..(u + 1) * n1],
                &mut self.wt[u * n1 + 1..(u + 1) * n1],
            );
            // `wv[u][v] = T[cu][cv]` and its transpose `wt[u][v] = wv[v][u] = T[cv][cu]`.
            let (fw, bw) = (
                &forward[cu * c..(cu + 1) * c],
                &backward[cu * c..(cu + 1) * c],
            );
            for ((dv, dt), &cv) in wv_row.iter_mut().zip(wt_row.iter_mut()).zip(&g.class) {
                *dv = fw[cv as usize];
                *dt = bw[cv as usize];
            }
            wv_row[u - 1] = 0.0;
            wt_row[u - 1] = 0.0;
        }
        // Zeros count (the diagonal), then every class pair with at least one vertex pair.
        let mut members = vec![0usize; c];
        for &cu in &g.class {
            members[cu as usize] += 1;
        }
        let mut w_max = if n > 0 { 0.0 } else { f64::NEG_INFINITY };
        for a in 0..c {
            for b in 0..c {
                let pairs = if a == b {
                    members[a] >= 2
                } else {
                    members[a] > 0 && members[b] > 0
                };
                if pairs {
                    w_max = f64::max(w_max, forward[a * c + b]);
                }
            }
        }
        self.table_scratch = table;
        w_max
    }

    /// Column groups start as the classes (none without classes), each represented by
    /// its least vertex.
    fn load_column_groups(&mut self, g: &WeightMatrix) {
        self.col_group.clear();
        if g.class.is_empty() {
            return;
        }
        self.col_group.push(0);
        self.col_group.extend_from_slice(&g.class);
        self.group_rep.clear();
        self.group_rep.resize(g.classes, 0);
        for (u, &c) in (1..).zip(&g.class) {
            if self.group_rep[c as usize] == 0 {
                self.group_rep[c as usize] = u;
            }
        }
        for v in [&mut self.group_split, &mut self.split_next] {
            v.clear();
            v.resize(g.classes, NO_GROUP);
        }
        self.group_lab.clear();
        self.group_lab.resize(g.classes, 0);
        let words = self.n / 64 + 1;
        self.group_bits.clear();
        self.group_bits.resize(g.classes * words, 0);
        for (u, &c) in (1..).zip(&g.class) {
            set_bit(&mut self.group_bits[c as usize * words..], u);
        }
        self.groups_stale = true;
    }

    /// The `edge_cnt > 0` branch of the reference's driver: fresh ids, empty flowers,
    /// every label at the largest weight, no blossom parents.
    fn init_duals(&mut self) {
        let (n, ids) = (self.n, self.stride);
        self.pa.clear();
        self.pa.resize(ids, 0);
        self.st.clear();
        self.st.extend(0..ids);
        self.tops_dirty = true;
        self.slack.clear();
        self.slack.resize(ids, 0);
        self.slack_dist.clear();
        self.slack_dist.resize(ids, 0.0);
        self.label.clear();
        self.label.resize(ids, UNLABELED);
        self.flower.resize_with(ids, Vec::new);
        self.flower.iter_mut().for_each(Vec::clear);
        self.parent.clear();
        self.parent.resize(ids, 0);
        let w_max = self.w_max;
        self.lab.clear();
        self.lab.resize(ids, w_max);
        self.free_ids.clear();
        self.free_ids.resize((ids - n) / 64 + 1, 0);
        self.budget = step_budget(n);
        self.aborted = false;
    }

    /// `mate[u]` for every vertex, keeping only mutual pairs (the reference reports a
    /// non-mutual mate as an error and leaves the vertex single).
    fn mates(&self) -> Vec<Option<usize>> {
        let n = self.n;
        (1..=n)
            .map(|u| {
                let v = self.mate[u];
                (v > 0 && v <= n && self.mate[v] == u).then(|| v - 1)
            })
            .collect()
    }

    // ----- guards -----------------------------------------------------------------------

    /// Spends one step of the outer loops (phases, dual updates, BFS pops). In exact
    /// arithmetic they total O(n²), far below [`step_budget`]; the cap only exists so that
    /// a degenerate float input (overflow to inf/NaN) cannot loop forever. When it runs
    /// out the solver stops and returns the mutual pairs it has.
    fn spend(&mut self) -> bool {
        if self.aborted || self.budget == 0 {
            self.aborted = true;
            return false;
        }
        self.budget -= 1;
        true
    }

    /// Bound for walks over one blossom tree or one alternating path; exceeding it means
    /// the structure is corrupt, so the solver aborts instead of looping.
    fn walk_limit(&self) -> usize {
        2 * self.stride + 2
    }

    fn abort(&mut self) {
        self.aborted = true;
    }

    // ----- edge helpers -----------------------------------------------------------------

    /// The reference's `edge[x][y]`.
    #[inline]
    fn e(&mut self, x: usize, y: usize) -> Edge {
        let n = self.n;
        if x > n {
            if y > n {
                self.bb_entry(x, y)
            } else {
                self.row_edge(x, y)
            }
        } else if y > n {
            self.col_edge(y, x)
        } else {
            self.vertex_edge(x, y, self.wv[x * (n + 1) + y])
        }
    }

    /// The vertex inside blossom `b` whose edges stand for `b`'s towards vertex `x`
    /// (see [`Self::inner`]); 0 only before `b`'s row is built.
    #[inline]
    fn inner_of(&self, b: usize, x: usize) -> usize {
        self.inner[(b - self.n - 1) * (self.n + 1) + x] as usize
    }

    /// `edge[b][x]` for a blossom `b` and a vertex `x`: `(i, x, w(i, x))`. With no inner
    /// vertex yet (`i == 0`) the weight reads row 0, which is all zeros: no edge.
    #[inline]
    fn row_edge(&self, b: usize, x: usize) -> Edge {
        let i = self.inner_of(b, x);
        self.vertex_edge(i, x, self.wv[i * (self.n + 1) + x])
    }

    /// `edge[x][b]` for a vertex `x` and a blossom `b`: `(x, i, w(x, i))`, read from the
    /// transposed row of `i` (a blossom's few inner vertices keep those rows cached).
    #[inline]
    fn col_edge(&self, b: usize, x: usize) -> Edge {
        let i = self.inner_of(b, x);
        self.vertex_edge(x, i, self.wt[i * (self.n + 1) + x])
    }

    /// Index of `edge[x][y]` in `bb` for two blossom ids.
    #[inline]
    fn bb_idx(&self, x: usize, y: usize) -> usize {
        let (n, nb) = (self.n, self.stride - self.n - 1);
        (x - n - 1) * nb + (y - n - 1)
    }

    /// The (never modified) entry of vertex pair `(u, v)` with weight `w`.
    fn vertex_edge(&self, u: usize, v: usize, w: f64) -> Edge {
        Edge {
            u: u as u32,
            v: v as u32,
            w,
        }
    }

    /// Slack of an edge: `lab[u] + lab[v] - 2 w(u, v)` with the *original* weight of its
    /// end points (the reference's `dist` reads `edge[e.u][e.v].w`, not `e.w`).
    #[inline]
    fn dist(&self, e: Edge) -> f64 {
        self.lab[e.u as usize] + self.lab[e.v as usize] - e.w * 2.0
    }

    /// The reference's `flower_from[b][x]` for a blossom `b`: the member of `b`'s flower
    /// that contains the vertex `x` (or is `x`), 0 if `x` is not inside `b`. The
    /// reference builds it row by row when `b` forms (each member's row, the last member
    /// with a nonzero entry winning), which gives exactly this, as members are disjoint
    /// and a blossom's contents never change while it exists. Walking up from `x` costs
    /// the nesting depth instead of a table of `n` entries per blossom.
    fn ff(&self, b: usize, x: usize) -> usize {
        debug_assert!(b > self.n, "only blossoms have members");
        let mut y = x;
        for _ in 0..self.walk_limit() {
            match self.parent[y] as usize {
                p if p == b => return y,
                0 => return 0,
                p => y = p,
            }
        }
        0
    }

    // ----- the reference's primitives ---------------------------------------------------

    /// `set_slack`: recompute the slack vertex of `x` over all outer vertices.
    ///
    /// Only the vertices in [`Self::slack_candidates`] are visited, in ascending order:
    /// the outer ones, less the free twins that an earlier free twin stands for. Every
    /// skipped vertex's slack equals, bit for bit, that of a twin visited before it, so
    /// the reference's strict `<` would not have taken it either. The best candidate is
    /// kept in locals and stored once.
    fn set_slack(&mut self, x: usize) {
        let (best_u, best_d) = self.best_slack_edge(x);
        debug_assert_eq!(
            (best_u, best_d.to_bits()),
            {
                let (u, d) = self.best_slack_edge_full(x);
                (u, d.to_bits())
            },
            "set_slack({x}): the twin shortcut changed the result"
        );
        self.slack[x] = best_u;
        if best_u != 0 {
            self.store_slack_dist(x, best_d);
        }
    }

    /// `slack_dist[x] = d`, listing `x` in [`Self::nonpositive_slacks`] when `d <= 0`.
    #[inline]
    fn store_slack_dist(&mut self, x: usize, d: f64) {
        self.slack_dist[x] = d;
        if not_positive(d) {
            self.nonpositive_slacks.push(x as u32);
        }
    }

    /// `label[b] = INNER`, listing a blossom in [`Self::zero_inners`] when `lab <= 0`.
    #[inline]
    fn label_inner(&mut self, b: usize) {
        self.label[b] = INNER;
        if b > self.n && not_positive(self.lab[b]) {
            self.zero_inners.push(b as u32);
        }
    }

    /// The reference's `set_slack` choice for `x`: the first outer vertex `u` (ascending)
    /// outside `x` with a live edge `(u, x)` of least slack, as `(u, slack)`, `u == 0`
    /// if none.
    fn best_slack_edge(&mut self, x: usize) -> (usize, f64) {
        if !self.col_group.is_empty() {
            return self.best_slack_edge_grouped(x);
        }
        let mut words = std::mem::take(&mut self.candidate_scratch);
        self.slack_candidates(x, &mut words);
        let (n, n1) = (self.n, self.n + 1);
        let (st, label, lab) = (&self.st[..], &self.label[..], &self.lab[..]);
        let (mut best_u, mut best_d) = (0, 0.0);
        let visit = |u: usize, du: f64, best_u: &mut usize, best_d: &mut f64| {
            if *best_u == 0 || du < *best_d {
                (*best_u, *best_d) = (u, du);
            }
        };
        for (i, &word) in words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let u = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let su = st[u];
                if su == x || label[su] != OUTER {
                    continue;
                }
                if x <= n {
                    // Column `x` of the vertex block: entries `(u, x, w)`.
                    let w = self.wt[x * n1 + u];
                    if w > 0.0 {
                        visit(u, lab[u] + lab[x] - w * 2.0, &mut best_u, &mut best_d);
                    }
                } else {
                    let e = self.col_edge(x, u);
                    if e.is_live() {
                        visit(u, self.dist(e), &mut best_u, &mut best_d);
                    }
                }
            }
        }
        self.candidate_scratch = words;
        (best_u, best_d)
    }

    /// [`Self::best_slack_edge`] with column groups (see [`Self::refine_column_groups`]):
    /// the members of one group outside `x` offer `x` the same slack (same class, same
    /// label, and for a blossom `x` the same inner vertex), so after a candidate of a
    /// group no later one can win the strict `<`. Only each group's first candidate is
    /// weighed, in ascending order, which picks the same vertex as the full loop.
    fn best_slack_edge_grouped(&mut self, x: usize) -> (usize, f64) {
        if self.groups_stale {
            self.refine_column_groups();
        }
        let mut words = std::mem::take(&mut self.candidate_scratch);
        self.slack_candidates(x, &mut words);
        let mut firsts = std::mem::take(&mut self.group_firsts);
        firsts.clear();
        if self.inside_of == x {
            // Vertices inside `x` are no candidates: drop them in bulk.
            for (c, &inside) in words.iter_mut().zip(&self.inside_bits) {
                *c &= !inside;
            }
        }
        let (st, label) = (&self.st[..], &self.label[..]);
        for members in self.group_bits.chunks_exact(words.len()) {
            'group: for (i, (&c, &m)) in words.iter().zip(members).enumerate() {
                let mut bits = c & m;
                while bits != 0 {
                    let u = i * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if st[u] != x && label[st[u]] == OUTER {
                        firsts.push(u as u32);
                        break 'group;
                    }
                }
            }
        }
        firsts.sort_unstable();
        let (mut best_u, mut best_d) = (0, 0.0);
        for &u in &firsts {
            let u = u as usize;
            let Some(du) = self.slack_towards(x, u) else {
                continue;
            };
            if best_u == 0 || du < best_d {
                (best_u, best_d) = (u, du);
            }
        }
        self.candidate_scratch = words;
        self.group_firsts = firsts;
        (best_u, best_d)
    }

    /// The vertices [`Self::best_slack_edge`] visits for `x`, as bits: the outer ones
    /// except free twins behind their class's first free vertex; when that first one lies
    /// inside `x` (a free `x` contains its free base), the next twin outside `x` stands
    /// for the class instead.
    fn slack_candidates(&self, x: usize, words: &mut Vec<u64>) {
        words.clear();
        words.extend(
            self.outer_bits
                .iter()
                .zip(&self.stand_in_bits)
                .map(|(&o, &s)| o & s),
        );
        if self.class.is_empty() || self.mate[x] != 0 {
            return;
        }
        let mut f = x;
        while f > self.n {
            match self.flower[f].first() {
                Some(&base) => f = base,
                None => return,
            }
        }
        let mut twin = self.next_free_twin[f] as usize;
        while twin != 0 && self.st[twin] == x {
            twin = self.next_free_twin[twin] as usize;
        }
        if twin != 0 {
            set_bit(words, twin);
        }
    }

    /// The slack of `edge[u][x]` for a vertex `u` outside `x`, or `None` if it is no edge:
    /// `(u, x, w)` for a vertex `x`, `(u, i, w(u, i))` for a blossom `x` with inner `i`.
    #[inline]
    fn slack_towards(&self, x: usize, u: usize) -> Option<f64> {
        if x <= self.n {
            let w = self.wt[x * (self.n + 1) + u];
            (w > 0.0).then(|| self.lab[u] + self.lab[x] - w * 2.0)
        } else {
            let e = self.col_edge(x, u);
            e.is_live().then(|| self.dist(e))
        }
    }

    /// The plain `set_slack` loop over every vertex; checks the shortcut in debug builds.
    fn best_slack_edge_full(&self, x: usize) -> (usize, f64) {
        let (st, label) = (&self.st[1..=self.n], &self.label[..]);
        let (mut best_u, mut best_d) = (0, 0.0);
        for (u, &su) in (1..).zip(st) {
            if su == x || label[su] != OUTER {
                continue;
            }
            let Some(du) = self.slack_towards(x, u) else {
                continue;
            };
            if best_u == 0 || du < best_d {
                (best_u, best_d) = (u, du);
            }
        }
        (best_u, best_d)
    }

    /// `q_push`: append the vertices of `x` to the BFS queue, breadth-first over nested
    /// flowers (the reference uses a FIFO here, the template a DFS; the queue order can
    /// change which of several equal-weight matchings is returned).
    #[inline]
    fn q_push(&mut self, x: usize) {
        if x <= self.n {
            self.enqueue(x);
        } else {
            self.q_push_blossom(x);
        }
    }

    /// [`Self::q_push`] of a blossom, kept out of line so that the vertex case inlines.
    #[inline(never)]
    fn q_push_blossom(&mut self, x: usize) {
        let limit = self.walk_limit();
        let mut fifo = std::mem::take(&mut self.push_fifo);
        fifo.clear();
        fifo.push_back(x);
        let mut steps = 0;
        while let Some(y) = fifo.pop_front() {
            steps += 1;
            if steps > limit {
                self.abort();
                break;
            }
            if y <= self.n {
                self.enqueue(y);
            } else {
                fifo.extend(self.flower[y].iter().copied());
            }
        }
        self.push_fifo = fifo;
    }

    /// Queues the vertex `u`, which just became outer, and marks it in
    /// [`Self::outer_bits`]: within a phase a vertex becomes outer only by being queued
    /// here and stays outer (new blossoms are outer; only inner ones are expanded).
    fn enqueue(&mut self, u: usize) {
        self.q.push(u);
        set_bit(&mut self.outer_bits, u);
        self.outer_nonpositive |= not_positive(self.lab[u]);
    }

    /// `set_st`: set the top-level id of `x` and everything nested in it to `b`. Like the
    /// reference it stops descending at `x < n`; vertex `n` has an empty flower anyway.
    fn set_st(&mut self, x: usize, b: usize) {
        self.set_st_walk::<false>(x, b);
    }

    /// `set_st(b, b)` for a new blossom `b`, which also records its vertices in
    /// [`Self::inside_bits`] (read by its build and its `set_slack`).
    fn set_st_new_blossom(&mut self, b: usize) {
        let words = self.n / 64 + 1;
        self.inside_bits.clear();
        self.inside_bits.resize(words, 0);
        self.set_st_walk::<true>(b, b);
        self.inside_of = b;
    }

    /// The walk of [`Self::set_st`]; with `MARK`, vertices are also set in
    /// [`Self::inside_bits`].
    fn set_st_walk<const MARK: bool>(&mut self, x: usize, b: usize) {
        self.tops_dirty = true;
        self.st[x] = b;
        if x < self.n {
            return;
        }
        let (n, limit) = (self.n, self.walk_limit());
        let mut stack = std::mem::take(&mut self.st_stack);
        stack.clear();
        stack.push(x);
        // Children are set as they are listed; only blossoms go through the stack.
        let (flower, st, inside) = (&self.flower, &mut self.st, &mut self.inside_bits);
        let mut steps = 0;
        while let Some(y) = stack.pop() {
            let children = &flower[y];
            steps += children.len();
            if steps > limit {
                self.aborted = true;
                break;
            }
            for &c in children {
                st[c] = b;
                if MARK && c <= n {
                    set_bit(inside, c);
                }
                if c >= n {
                    stack.push(c);
                }
            }
        }
        self.st_stack = stack;
    }

    /// `get_pr`: position of `xr` in flower `b`; when odd, reverse `flower[1..]` and
    /// return `len - pos` (always even). The reference asserts `xr` is present; a missing
    /// `xr` (corrupt state only) aborts the solve instead of panicking.
    fn get_pr(&mut self, b: usize, xr: usize) -> usize {
        let Some(pr) = self.flower[b].iter().position(|&y| y == xr) else {
            self.abort();
            return 0;
        };
        if pr % 2 == 1 {
            self.flower[b][1..].reverse();
            self.flower[b].len() - pr
        } else {
            pr
        }
    }

    /// `set_match`: match `u` through edge `(u, v)`, rotating nested flowers, processed
    /// through an explicit FIFO as in the reference.
    fn set_match(&mut self, u: usize, v: usize) {
        let limit = self.walk_limit();
        let mut fifo = std::mem::take(&mut self.match_fifo);
        fifo.clear();
        fifo.push_back((u, v));
        let mut steps = 0;
        while let Some((u, v)) = fifo.pop_front() {
            steps += 1;
            if steps > limit {
                self.abort();
                break;
            }
            let e = self.e(u, v);
            self.mate[u] = e.v as usize;
            if u <= self.n {
                continue;
            }
            let xr = self.ff(u, e.u as usize);
            let pr = self.get_pr(u, xr);
            let fl = &self.flower[u];
            fifo.extend((0..pr).map(|i| (fl[i], fl[i ^ 1])));
            fifo.push_back((xr, v));
            self.flower[u].rotate_left(pr);
        }
        self.match_fifo = fifo;
    }

    /// `augment`: flip the alternating path from `u` (reached through `v`) to its root.
    /// The reference's FIFO never holds more than one pair, so this is a plain loop that
    /// stops at the root, like its early `return`.
    fn augment(&mut self, u: usize, v: usize) {
        let (mut u, mut v) = (u, v);
        for _ in 0..self.walk_limit() {
            let xnv = self.st[self.mate[u]];
            self.set_match(u, v);
            if xnv == 0 {
                return;
            }
            self.set_match(xnv, self.st[self.pa[xnv]]);
            u = self.st[self.pa[xnv]];
            v = xnv;
        }
        self.abort();
    }

    /// `get_lca`: lowest common ancestor of `u` and `v` in the alternating forest, or 0.
    /// Terminates: every step with a nonzero id either returns or marks a new id.
    fn get_lca(&mut self, u: usize, v: usize) -> usize {
        self.t += 1;
        let (mut u, mut v) = (u, v);
        while u != 0 || v != 0 {
            if u != 0 {
                if self.vis[u] == self.t {
                    return u;
                }
                self.vis[u] = self.t;
                u = self.st[self.mate[u]];
                if u != 0 {
                    u = self.st[self.pa[u]];
                }
            }
            std::mem::swap(&mut u, &mut v);
        }
        0
    }

    /// First free blossom id (`st[b] == 0`) above `n`, else a new id `n_x + 1` initialised
    /// exactly as the reference initialises the entries it appends. Returns `None` (and
    /// aborts) if the preallocated tables are full, which a valid state never reaches.
    fn alloc_blossom(&mut self, lca: usize) -> Option<usize> {
        let first_free = self
            .free_ids
            .iter()
            .enumerate()
            .find(|(_, &word)| word != 0)
            .map(|(i, &word)| self.n + 1 + i * 64 + word.trailing_zeros() as usize);
        let b = first_free.unwrap_or(self.n_x + 1);
        debug_assert_eq!(
            b,
            (self.n + 1..=self.n_x)
                .find(|&b| self.st[b] == 0)
                .unwrap_or(self.n_x + 1),
            "free blossom ids out of step with st"
        );
        if b <= self.n_x {
            clear_bit(&mut self.free_ids, b - self.n - 1);
            self.lab[b] = 0.0;
            self.label[b] = OUTER;
            self.mate[b] = self.mate[lca];
            self.flower[b].clear();
            self.flower[b].push(lca);
            return Some(b);
        }
        if b >= self.stride {
            self.abort();
            return None;
        }
        self.n_x = b;
        self.init_new_id(b, lca);
        Some(b)
    }

    /// Fields of a freshly appended id: `{u:0, v:0, w:0}` edges in its row and column (no
    /// inner vertex yet), `flower = [lca]`, `match = match[lca]`, `st = b`, everything else
    /// zero.
    fn init_new_id(&mut self, b: usize, lca: usize) {
        let row = (b - self.n - 1) * (self.n + 1);
        self.inner[row..row + self.n + 1].fill(0);
        // Its blossom–blossom entries are computed when read (see `bb_entry`); nothing
        // reads them before `b` is built.
        #[cfg(debug_assertions)]
        for x in self.n + 1..=b {
            let (i, j) = (self.bb_idx(b, x), self.bb_idx(x, b));
            self.bb_eager[i] = EMPTY_EDGE;
            self.bb_eager[j] = EMPTY_EDGE;
        }
        self.flower[b].clear();
        self.flower[b].push(lca);
        self.mate[b] = self.mate[lca];
        self.st[b] = b;
        self.tops_dirty = true;
        self.label[b] = OUTER;
        self.slack[b] = 0;
        self.pa[b] = 0;
        self.vis[b] = 0;
        self.lab[b] = 0.0;
    }

    /// Appends the odd cycle from `start` up to (excluding) `lca` to flower `b`,
    /// pushing each inner blossom's vertices to the queue (they become outer).
    fn collect_cycle_path(&mut self, b: usize, start: usize, lca: usize) {
        let limit = self.walk_limit();
        let mut x = start;
        let mut steps = 0;
        while x != lca {
            steps += 1;
            if steps > limit {
                self.abort();
                return;
            }
            self.flower[b].push(x);
            let y = self.st[self.mate[x]];
            self.flower[b].push(y);
            self.q_push(y);
            x = self.st[self.pa[y]];
        }
    }

    /// `add_blossom`: contract the cycle through `u`, `lca`, `v` into a new blossom.
    fn add_blossom(&mut self, u: usize, lca: usize, v: usize) {
        let Some(b) = self.alloc_blossom(lca) else {
            return;
        };
        self.collect_cycle_path(b, u, lca);
        self.flower[b][1..].reverse();
        self.collect_cycle_path(b, v, lca);
        self.set_st_new_blossom(b);
        self.build_blossom_edges(b);
        self.set_slack(b);
        self.inside_of = 0;
        self.new_blossom = b;
    }

    /// Blossom `b`'s row/column of the edge table: for each member in flower order, copy
    /// the member's entry when `b`'s current weight is `<= 0` (`my_cmp(w, 0) == 0`) or
    /// the member's entry has strictly smaller slack; then adopt the members (see [`Self::ff`]).
    ///
    /// Entries towards vertices are computed here; those towards other blossoms when
    /// first read (see [`Self::record_blossom_build`]).
    fn build_blossom_edges(&mut self, b: usize) {
        let flower = std::mem::take(&mut self.flower[b]);
        if self.col_group.is_empty() {
            self.merge_vertex_columns(b, &flower);
        } else {
            #[cfg(debug_assertions)]
            let plain = {
                self.merge_vertex_columns(b, &flower);
                let base = (b - self.n - 1) * (self.n + 1);
                self.inner[base..base + self.n + 1].to_vec()
            };
            self.merge_member_vertices_grouped(b, &flower);
            #[cfg(debug_assertions)]
            for x in (1..=self.n).filter(|&x| !self.is_internal(b, x)) {
                assert_eq!(
                    self.inner_of(b, x),
                    plain[x] as usize,
                    "column groups changed blossom {b}'s entry for {x}"
                );
            }
        }
        self.record_blossom_build(b, &flower);
        // A top-level id has no parent, and a freed id was top-level when it was expanded.
        debug_assert_eq!(self.parent[b], 0, "blossom {b} is new, so top-level");
        for &xs in &flower {
            self.parent[xs] = b as u32;
        }
        self.flower[b] = flower;
    }

    /// The vertex columns of `b`'s row, member by member, as the reference does: each
    /// member's row is then one contiguous stream. The reference first resets `b`'s
    /// weights, so its first member always copies; later ones copy when `b`'s entry is
    /// not live or theirs has strictly smaller slack. `best[x] == dist(edge[b][x])`:
    /// labels do not change here, so it is the value the reference recomputes.
    fn merge_vertex_columns(&mut self, b: usize, flower: &[usize]) {
        let n = self.n;
        let mut best = std::mem::take(&mut self.dist_scratch);
        let mut weight = std::mem::take(&mut self.weight_scratch);
        best.resize(best.len().max(n + 1), 0.0);
        weight.resize(weight.len().max(n + 1), 0.0);
        if let Some((&first, rest)) = flower.split_first() {
            let (best, weight) = (&mut best[1..=n], &mut weight[1..=n]);
            self.merge_member_vertices::<true>(b, first, best, weight);
            for &xs in rest {
                self.merge_member_vertices::<false>(b, xs, best, weight);
            }
        }
        self.dist_scratch = best;
        self.weight_scratch = weight;
    }

    /// Whether `x` lies inside the blossom `b` just built (`set_st(b, b)` marked them).
    ///
    /// Entries `edge[b][x]`, `edge[x][b]` for such `x` are never read for the solve: slack
    /// scans and `set_slack` skip `st[u] == x`, `set_match` and `expand_blossom` read
    /// entries between siblings or towards the tree outside, and the blossom's row is
    /// rewritten when its id is handed out again.
    #[inline]
    fn is_internal(&self, b: usize, x: usize) -> bool {
        self.st[x] == b
    }

    /// The vertex columns `x = 1..=n` of one member `xs` in [`Self::build_blossom_edges`]:
    /// `best[x - 1]` is the cached slack of `edge[b][x]` and `weight[x - 1]` its weight
    /// (whether it is live). Only the inner vertex is stored (see [`Self::inner`]).
    fn merge_member_vertices<const FIRST: bool>(
        &mut self,
        b: usize,
        xs: usize,
        best: &mut [f64],
        weight: &mut [f64],
    ) {
        let (n, n1) = (self.n, self.n + 1);
        let base = (b - n - 1) * n1;
        let lab = &self.lab[1..n1];
        if xs <= n {
            // `edge[xs][x] = (xs, x, w(xs, x))`.
            let inner_b = &mut self.inner[base + 1..base + n1];
            let row = &self.wv[xs * n1 + 1..(xs + 1) * n1];
            let lab_xs = self.lab[xs];
            for ((ib, (best_x, weight_x)), (&w, &lab_x)) in inner_b
                .iter_mut()
                .zip(best.iter_mut().zip(weight.iter_mut()))
                .zip(row.iter().zip(lab))
            {
                let dc = lab_xs + lab_x - w * 2.0;
                if FIRST || not_positive(*weight_x) || dc < *best_x {
                    (*ib, *best_x, *weight_x) = (xs as u32, dc, w);
                }
            }
        } else {
            // `edge[xs][x] = (i, x, w(i, x))` for `xs`'s inner vertex `i`.
            let base_xs = (xs - n - 1) * n1;
            let (inner_b, inner_xs) = split_rows(&mut self.inner, base + 1, base_xs + 1, n);
            let (wv, lab_all) = (&self.wv[..], &self.lab[..]);
            for (x, ((ib, &i), (best_x, weight_x))) in (1..).zip(
                inner_b
                    .iter_mut()
                    .zip(inner_xs)
                    .zip(best.iter_mut().zip(weight.iter_mut())),
            ) {
                let w = wv[i as usize * n1 + x];
                let dc = lab_all[i as usize] + lab[x - 1] - w * 2.0;
                if FIRST || not_positive(*weight_x) || dc < *best_x {
                    (*ib, *best_x, *weight_x) = (i, dc, w);
                }
            }
        }
    }

    /// The vertex columns of [`Self::build_blossom_edges`] for a class table: computed once
    /// per column group (see [`Self::refine_column_groups`]), at a member of the group
    /// outside `b`, and copied to the whole group. Columns inside `b` get their group's
    /// entry too; nothing reads them (see [`Self::is_internal`]).
    fn merge_member_vertices_grouped(&mut self, b: usize, flower: &[usize]) {
        if self.groups_stale {
            self.refine_column_groups();
        }
        self.pick_outside_members(b);
        let groups = self.group_rep.len();
        let (n, n1) = (self.n, self.n + 1);
        let mut entry = std::mem::take(&mut self.group_inner);
        entry.resize(groups, 0);
        let (wv, lab, inner) = (&self.wv[..], &self.lab[..], &self.inner[..]);
        for (g, out) in entry.iter_mut().enumerate() {
            let x = self.group_outside[g] as usize;
            if x == 0 {
                *out = 0;
                continue;
            }
            // The member rule of `merge_member_vertices`, for the one column `x`.
            let (mut best_i, mut best_d, mut best_w) = (0, 0.0, 0.0);
            for (k, &xs) in flower.iter().enumerate() {
                let i = if xs <= n {
                    xs
                } else {
                    inner[(xs - n - 1) * n1 + x] as usize
                };
                let w = wv[i * n1 + x];
                let dc = lab[i] + lab[x] - w * 2.0;
                if k == 0 || not_positive(best_w) || dc < best_d {
                    (best_i, best_d, best_w) = (i, dc, w);
                }
            }
            *out = best_i as u32;
        }
        let base = (b - n - 1) * n1;
        for (ib, &g) in self.inner[base + 1..base + n1]
            .iter_mut()
            .zip(&self.col_group[1..n1])
        {
            *ib = entry[g as usize];
        }
        self.group_inner = entry;
    }

    /// Splits the column groups of a class table by the current labels (they changed
    /// since the last split).
    ///
    /// Two columns `x`, `x'` share a group only while they have had the same class and,
    /// bit for bit, the same label at every blossom build of this solve: groups start as
    /// the classes and are split by the labels before a build, never merged. For columns
    /// outside a blossom, its entry is then the same inner vertex: the member rule
    /// compares `lab[i] + lab[x] - 2 w(i, x)` over the members, and for a vertex member
    /// `i` (never `x` itself, which is outside) `w(i, x) = w(i, x')` by class, while a
    /// blossom member's inner vertex for `x` and `x'` is already the same (by induction
    /// over the builds). So one column per group need be computed.
    ///
    /// A group keeps its least member as representative: members only ever leave a
    /// group, to a new group led by the first of them.
    fn refine_column_groups(&mut self) {
        self.groups_stale = false;
        let words = self.n / 64 + 1;
        let lab = &self.lab[..];
        for (bits, &rep) in self.group_lab.iter_mut().zip(&self.group_rep) {
            *bits = lab[rep as usize].to_bits();
        }
        self.group_split.fill(NO_GROUP);
        for (x, l) in (1..=self.n).zip(&lab[1..]) {
            let g = self.col_group[x] as usize;
            let bits = l.to_bits();
            if bits == self.group_lab[g] {
                continue;
            }
            // Find the group split off `g` in this pass for this label, or start one.
            let mut s = self.group_split[g];
            while s != NO_GROUP && self.group_lab[s as usize] != bits {
                s = self.split_next[s as usize];
            }
            if s == NO_GROUP {
                s = self.group_rep.len() as u32;
                self.group_rep.push(x as u32);
                self.group_lab.push(bits);
                self.split_next.push(self.group_split[g]);
                self.group_split.push(NO_GROUP);
                self.group_split[g] = s;
                self.group_bits.extend(std::iter::repeat_n(0, words));
            }
            self.col_group[x] = s;
            clear_bit(&mut self.group_bits[g * words..], x);
            set_bit(&mut self.group_bits[s as usize * words..], x);
        }
    }

    /// [`Self::group_outside`]: for each column group, a member outside the blossom `b`
    /// just marked by `set_st` (its representative unless that lies inside), or 0 if all
    /// its members are inside.
    fn pick_outside_members(&mut self, b: usize) {
        let mut missing = 0;
        self.group_outside.clear();
        for &rep in &self.group_rep {
            let outside = !self.is_internal(b, rep as usize);
            missing += usize::from(!outside);
            self.group_outside.push(if outside { rep } else { 0 });
        }
        if missing == 0 {
            return;
        }
        // Groups led from inside `b`: their first member outside, from the member bits
        // less `b`'s own (a build always follows `set_st_new_blossom(b)`).
        debug_assert_eq!(self.inside_of, b, "inside_bits are not b's");
        let words = self.n / 64 + 1;
        for g in 0..self.group_rep.len() {
            if self.group_outside[g] != 0 {
                continue;
            }
            let bits = &self.group_bits[g * words..(g + 1) * words];
            let outside =
                bits.iter()
                    .zip(&self.inside_bits)
                    .enumerate()
                    .find_map(|(i, (&m, &inside))| {
                        let word = m & !inside;
                        (word != 0).then(|| (i * 64 + word.trailing_zeros() as usize) as u32)
                    });
            debug_assert!(outside.is_none_or(|x| !self.is_internal(b, x as usize)));
            self.group_outside[g] = outside.unwrap_or(0);
        }
    }

    /// The blossom columns of [`Self::build_blossom_edges`]. The reference computes `b`'s
    /// entry for every other live blossom id here, yet most are never read: in the trace4
    /// sample 92 % are for blossoms nested inside others, which a later read needs only if
    /// every blossom around them expands first. An entry depends only on `b`'s flower as
    /// built, the members' entries for the other id and the vertex labels now; none of
    /// those change while both ids live (only the later-born one's build writes entries
    /// between two ids, and a blossom's members live as long as it does). So the build
    /// records them, and [`Self::bb_entry`] computes an entry the first time it is read.
    fn record_blossom_build(&mut self, b: usize, flower: &[usize]) {
        let n1 = self.n + 1;
        if !self.snapshot_current {
            self.lab_snapshots.extend_from_slice(&self.lab[..n1]);
            self.snapshot_current = true;
        }
        self.lab_version[b] = (self.lab_snapshots.len() / n1 - 1) as u32;
        self.births += 1;
        self.born[b] = self.births;
        let built = &mut self.built_flower[b];
        built.clear();
        built.extend(flower.iter().map(|&x| x as u32));
        #[cfg(debug_assertions)]
        self.merge_member_blossoms_eagerly(b, flower);
    }

    /// `edge[x][y]` for two blossom ids, computed (with `edge[y][x]`) on its first read
    /// since the later-born of the two was built (see [`Self::record_blossom_build`]).
    fn bb_entry(&mut self, x: usize, y: usize) -> Edge {
        debug_assert!(
            self.born[x] > 0 && self.born[y] > 0,
            "({x}, {y}): both built"
        );
        let (b, other) = if self.born[x] > self.born[y] {
            (x, y)
        } else {
            (y, x)
        };
        let i = self.bb_idx(x, y);
        if self.bb_stamp[i] != self.born[b] {
            self.compute_blossom_entries(b, other);
        }
        #[cfg(debug_assertions)]
        {
            let (got, eager) = (self.bb[i], self.bb_eager[i]);
            assert!(
                (got.u, got.v, got.w.to_bits()) == (eager.u, eager.v, eager.w.to_bits()),
                "lazy entry ({x}, {y}) is {got:?}, the eager one {eager:?}"
            );
        }
        self.bb[i]
    }

    /// `edge[b][x]` and `edge[x][b]` for a blossom `x` born before `b`, as `b`'s build
    /// would have computed them, by the rule for vertices: member by member in the
    /// flower's order then, copy the member's entry when `b`'s is not live or the
    /// member's has strictly smaller slack, under the labels of then. Members are born
    /// before `b`, so the recursion ends.
    fn compute_blossom_entries(&mut self, b: usize, x: usize) {
        debug_assert!(self.born[b] > self.born[x] && self.born[x] > 0);
        debug_assert_eq!(
            self.ff(b, x),
            0,
            "{x} is inside {b}: its entries are never read"
        );
        let (n, n1) = (self.n, self.n + 1);
        let labs = self.lab_version[b] as usize * n1;
        let (mut fwd, mut back, mut best) = (EMPTY_EDGE, EMPTY_EDGE, 0.0);
        for i in 0..self.built_flower[b].len() {
            let xs = self.built_flower[b][i] as usize;
            // `edge[xs][x]`, and below `edge[x][xs]`.
            let cand = if xs > n {
                self.bb_entry(xs, x)
            } else {
                self.col_edge(x, xs)
            };
            let lab = &self.lab_snapshots[labs..labs + n1];
            let dc = lab[cand.u as usize] + lab[cand.v as usize] - cand.w * 2.0;
            if i == 0 || !fwd.is_live() || dc < best {
                fwd = cand;
                back = if xs > n {
                    self.bb_entry(x, xs)
                } else {
                    self.row_edge(x, xs)
                };
                best = dc;
            }
        }
        let (i, j) = (self.bb_idx(b, x), self.bb_idx(x, b));
        (self.bb[i], self.bb[j]) = (fwd, back);
        let stamp = self.born[b];
        (self.bb_stamp[i], self.bb_stamp[j]) = (stamp, stamp);
    }

    /// Debug builds: the reference's eager blossom columns, into [`Self::bb_eager`].
    #[cfg(debug_assertions)]
    fn merge_member_blossoms_eagerly(&mut self, b: usize, flower: &[usize]) {
        let n = self.n;
        for x in n + 1..=self.n_x {
            if self.st[x] == 0 || self.is_internal(b, x) {
                continue;
            }
            let (mut fwd, mut back, mut best) = (EMPTY_EDGE, EMPTY_EDGE, 0.0);
            for (i, &xs) in flower.iter().enumerate() {
                let cand = if xs > n {
                    self.bb_eager[self.bb_idx(xs, x)]
                } else {
                    self.col_edge(x, xs)
                };
                let dc = self.dist(cand);
                if i == 0 || !fwd.is_live() || dc < best {
                    fwd = cand;
                    back = if xs > n {
                        self.bb_eager[self.bb_idx(x, xs)]
                    } else {
                        self.row_edge(x, xs)
                    };
                    best = dc;
                }
            }
            let (i, j) = (self.bb_idx(b, x), self.bb_idx(x, b));
            self.bb_eager[i] = fwd;
            self.bb_eager[j] = back;
        }
    }

    /// `expand_blossom`: dissolve an inner blossom whose label reached 0, relabelling the
    /// even-length side of its cycle as inner/outer pairs and the rest as unlabeled.
    fn expand_blossom(&mut self, b: usize) {
        self.bump_epoch();
        for i in 0..self.flower[b].len() {
            let c = self.flower[b][i];
            self.set_st(c, c);
        }
        let pa_edge = self.e(b, self.pa[b]);
        let xr = self.ff(b, pa_edge.u as usize);
        let pr = self.get_pr(b, xr);
        for i in (0..pr).step_by(2) {
            let xs = self.flower[b][i];
            let xns = self.flower[b][i + 1];
            self.pa[xs] = self.e(xns, xs).u as usize;
            self.label_inner(xs);
            self.label[xns] = OUTER;
            self.slack[xs] = 0;
            self.set_slack(xns);
            self.q_push(xns);
        }
        self.label_inner(xr);
        self.pa[xr] = self.pa[b];
        for i in pr + 1..self.flower[b].len() {
            let xs = self.flower[b][i];
            self.label[xs] = UNLABELED;
            self.set_slack(xs);
        }
        // Only now do the members become top-level: `ff(b, …)` above walks up to `b`.
        for i in 0..self.flower[b].len() {
            let c = self.flower[b][i];
            self.parent[c] = 0;
        }
        self.st[b] = 0;
        set_bit(&mut self.free_ids, b - self.n - 1);
        self.tops_dirty = true;
    }

    /// `on_found_edge`: a tight edge `e` from an outer vertex. Labels an unlabeled
    /// blossom inner (and its mate outer), or joins two outer trees: augment (returns
    /// true) or contract a blossom.
    fn on_found_edge(&mut self, e: Edge) -> bool {
        let u = self.st[e.u as usize];
        let v = self.st[e.v as usize];
        if self.label[v] != UNLABELED {
            self.bump_epoch();
        }
        if self.label[v] == UNLABELED {
            self.pa[v] = e.u as usize;
            self.label_inner(v);
            let nu = self.st[self.mate[v]];
            self.slack[v] = 0;
            self.slack[nu] = 0;
            self.label[nu] = OUTER;
            self.relabeled.extend([v as u32, nu as u32]);
            self.q_push(nu);
        } else if self.label[v] == OUTER {
            let lca = self.get_lca(u, v);
            if lca == 0 {
                self.augment(u, v);
                self.augment(v, u);
                return true;
            }
            self.add_blossom(u, lca, v);
        }
        false
    }

    // ----- one phase (`matching()`) -----------------------------------------------------

    /// One call of the reference's `matching()`: grow alternating trees from every free
    /// top-level id, adjusting duals, until an augmenting path is found (true) or a free
    /// outer vertex's label would drop to `<= d` (false).
    fn matching(&mut self) -> bool {
        if !self.spend() {
            return false;
        }
        self.start_phase();
        if self.q.is_empty() {
            return false;
        }
        loop {
            if !self.spend() {
                return false;
            }
            if self.drain_queue() {
                return true;
            }
            if self.aborted {
                return false;
            }
            let d = self.compute_delta();
            if !self.apply_delta(d) {
                return false;
            }
            self.clear_queue();
            if self.scan_slack_edges() {
                return true;
            }
            self.expand_zero_blossoms();
            if self.aborted {
                return false;
            }
        }
    }

    fn clear_queue(&mut self) {
        self.q.clear();
        self.q_head = 0;
    }

    /// Phase start: everything unlabeled with no slack, then every free top-level id
    /// becomes an outer root and its vertices enter the queue.
    fn start_phase(&mut self) {
        self.bump_epoch();
        let n_x = self.n_x;
        self.label[..=n_x].fill(UNLABELED);
        self.slack[..=n_x].fill(0);
        self.nonpositive_slacks.clear();
        self.zero_inners.clear();
        self.clear_queue();
        self.outer_bits.clear();
        self.outer_bits.resize(self.n / 64 + 1, 0);
        self.outer_nonpositive = false;
        self.mark_stand_ins();
        for x in 1..=n_x {
            if self.st[x] == x && self.mate[x] == 0 {
                self.pa[x] = 0;
                self.label[x] = OUTER;
                self.q_push(x);
            }
        }
    }

    /// Fills [`Self::stand_in_bits`] and [`Self::next_free_twin`] for this phase. The free
    /// vertices do not change within a phase, and all of them share each dual step, so a
    /// free vertex whose label equals (bit for bit) that of its class's first free
    /// vertex has, towards any `x` outside both, the same slack: it need not be visited.
    fn mark_stand_ins(&mut self) {
        let n = self.n;
        self.stand_in_bits.clear();
        self.stand_in_bits.resize(n / 64 + 1, !0);
        self.next_free_twin.clear();
        self.next_free_twin.resize(n + 1, 0);
        if self.class.is_empty() {
            return;
        }
        // Per class: (first free vertex, last one chained behind it).
        let mut chain = std::mem::take(&mut self.class_chain);
        chain.clear();
        chain.resize(self.scanned.len(), (0, 0));
        for u in (1..=n).filter(|&u| self.mate[u] == 0) {
            let (first, last) = &mut chain[self.class[u - 1] as usize];
            if *first == 0 {
                (*first, *last) = (u as u32, u as u32);
            } else if self.lab[*first as usize].to_bits() == self.lab[u].to_bits() {
                self.next_free_twin[*last as usize] = u as u32;
                *last = u as u32;
                clear_bit(&mut self.stand_in_bits, u);
            }
        }
        self.class_chain = chain;
    }

    /// BFS over tight edges from queued outer vertices; true when an augmentation happened.
    fn drain_queue(&mut self) -> bool {
        while self.q_head < self.q.len() {
            if !self.spend() {
                return false;
            }
            let u = self.q[self.q_head];
            self.q_head += 1;
            if self.label[self.st[u]] == INNER {
                continue;
            }
            if let Some(twin) = self.scanned_twin(u) {
                #[cfg(debug_assertions)]
                let before = (self.slack.clone(), self.slack_dist.clone());
                if self.update_slack_from_twin(u, twin) {
                    #[cfg(debug_assertions)]
                    self.check_twin_skip(u, before);
                    // The state is now what `u`'s own scan would have left, so `u` is the
                    // class's last clean scan. (Keeping `t` and only moving the relabeled
                    // mark would lose an update: if `st[u]` was relabeled after `t`'s
                    // scan, `u` skips it, but the next twin's scan would not.)
                    self.scanned[self.class[u - 1] as usize] =
                        (u as u32, self.epoch, self.relabeled.len() as u32);
                    if self.is_free_vertex_root(u) {
                        self.twin_skips.free_roots += 1;
                    } else {
                        self.twin_skips.other_vertices += 1;
                    }
                    continue;
                }
            }
            let (epoch, relabeled) = (self.epoch, self.relabeled.len());
            if self.scan_vertex(u) {
                return true;
            }
            if self.aborted {
                return false;
            }
            let clean = self.epoch == epoch && self.relabeled.len() == relabeled;
            if clean && !self.class.is_empty() {
                self.scanned[self.class[u - 1] as usize] = (u as u32, epoch, relabeled as u32);
            }
        }
        false
    }

    /// Debug builds: `u`'s full scan from the slacks `before` the twin shortcut must act
    /// on no tight edge and leave exactly the slacks the shortcut left.
    #[cfg(debug_assertions)]
    fn check_twin_skip(&mut self, u: usize, before: (Vec<usize>, Vec<f64>)) {
        let after = (self.slack.clone(), self.slack_dist.clone());
        (self.slack, self.slack_dist) = before;
        assert_eq!(
            self.scan_until_tight(u, 1),
            None,
            "twin skip of {u}: tight edge"
        );
        for x in 1..=self.n_x {
            let (s, d) = (self.slack[x], self.slack_dist[x]);
            assert_eq!(s, after.0[x], "twin skip of {u}: slack[{x}]");
            if s != 0 {
                assert_eq!(
                    d.to_bits(),
                    after.1[x].to_bits(),
                    "twin skip of {u}: dist[{x}]"
                );
            }
        }
    }

    fn bump_epoch(&mut self) {
        self.epoch += 1;
        self.relabeled.clear();
    }

    /// A vertex that is its own top-level id and unmatched: an outer root in every phase.
    fn is_free_vertex_root(&self, u: usize) -> bool {
        u <= self.n && self.st[u] == u && self.mate[u] == 0
    }

    /// A twin `t` of the vertex `u` whose scan (full or replayed), in this epoch, acted on
    /// no tight edge, and the position in [`Self::relabeled`] at that scan. Scanning `u` would then
    /// repeat `t`'s scan, up to the updates that [`Self::update_slack_from_twin`] redoes:
    /// towards any vertex outside `st[u]` and `st[t]`, `u` and `t` have the same weight
    /// (twins) and, checked bit for bit, the same label, hence the same slack; towards a
    /// top-level blossom, the slack of its entry for `u` and for `t` (checked bit for bit
    /// unless both are free roots, see [`Self::same_blossom_slacks`]). So no tight edge,
    /// and slack candidates equal to `t`'s, which the strict `<` of `update_slack` keeps
    /// out, except where the state differs: the members of `st[t]`, which `t`'s scan
    /// skipped, and the ids relabeled since, whose slack was reset. (`t`'s updates of
    /// `st[u]`, which `u`'s scan skips, happened before `u`'s turn in the reference too.)
    fn scanned_twin(&mut self, u: usize) -> Option<(usize, usize)> {
        if self.class.is_empty() {
            return None;
        }
        debug_assert!(u <= self.n, "the queue holds vertices");
        let (t, epoch, since) = self.scanned[self.class[u - 1] as usize];
        let t = t as usize;
        let twin = epoch == self.epoch
            && t != 0
            && t != u
            && self.lab[t].to_bits() == self.lab[u].to_bits()
            && self.same_blossom_slacks(u, t);
        twin.then_some((t, since as usize))
    }

    /// Whether every top-level blossom other than `st[u]` and `st[t]` offers twins `u` and
    /// `t` the same slack (bit for bit). A blossom's entry for a vertex is its member edge
    /// of least slack when the blossom was built; for two free roots that always held
    /// (free vertices share every dual step, so equal labels now mean equal labels then,
    /// and every compare came out the same), so only other vertices are checked.
    fn same_blossom_slacks(&mut self, u: usize, t: usize) -> bool {
        if self.is_free_vertex_root(u) && self.is_free_vertex_root(t) {
            return true;
        }
        self.refresh_tops();
        let (st_u, st_t) = (self.st[u], self.st[t]);
        self.tops.iter().all(|&b| {
            b == st_u
                || b == st_t
                || self.dist(self.col_edge(b, u)).to_bits()
                    == self.dist(self.col_edge(b, t)).to_bits()
        })
    }

    /// The updates of `u`'s scan that its twin `t`'s scan did not cover (see
    /// [`Self::scanned_twin`]), applied as `u`'s own scan would. Returns false, before
    /// changing anything, if one of those edges is tight (the caller then scans `u` in
    /// full).
    fn update_slack_from_twin(&mut self, u: usize, (t, since): (usize, usize)) -> bool {
        let mut updates = std::mem::take(&mut self.twin_updates);
        updates.clear();
        let st_t = self.st[t];
        let mut ok = st_t == self.st[u] || self.collect_twin_update(u, st_t, &mut updates);
        for i in since..self.relabeled.len() {
            if !ok {
                break;
            }
            ok = self.collect_twin_update(u, self.relabeled[i] as usize, &mut updates);
        }
        if ok {
            for &(x, d) in &updates {
                if self.slack[x] == 0 || d < self.slack_dist[x] {
                    self.slack[x] = u;
                    self.store_slack_dist(x, d);
                }
            }
        }
        self.twin_updates = updates;
        ok
    }

    /// Queues `u`'s slack candidate for the top-level id `y` (see [`Self::twin_candidate`]);
    /// false if a member edge is tight, so that `u` must be scanned in full.
    fn collect_twin_update(&mut self, u: usize, y: usize, updates: &mut Vec<(usize, f64)>) -> bool {
        match self.twin_candidate(u, y) {
            Ok(Some(d)) => updates.push((y, d)),
            Ok(None) => {}
            Err(()) => return false,
        }
        true
    }

    /// What `u`'s scan would offer `update_slack(u, y)` for the top-level id `y`: `Some`
    /// distance if some member edge qualifies, `None` if none does, `Err` if a member
    /// edge is tight and would be acted on.
    fn twin_candidate(&mut self, u: usize, y: usize) -> Result<Option<f64>, ()> {
        if y <= self.n {
            return self.twin_member_candidate(u, y, y, 0.0);
        }
        let dy = self.dist(self.col_edge(y, u));
        let mut members = std::mem::take(&mut self.members);
        members.clear();
        members.push(y);
        let mut result = Ok(None);
        while let Some(z) = members.pop() {
            if z > self.n {
                members.extend(self.flower[z].iter().copied());
                continue;
            }
            match self.twin_member_candidate(u, y, z, dy) {
                Ok(None) => {}
                Ok(found) => result = Ok(found),
                Err(()) => {
                    result = Err(());
                    break;
                }
            }
        }
        self.members = members;
        result
    }

    /// The scan's step for edge `(u, v)` with `v` inside top-level id `y` (see
    /// [`Self::twin_candidate`]); `dy` is the slack of `edge[u][y]` for a blossom `y`.
    fn twin_member_candidate(
        &self,
        u: usize,
        y: usize,
        v: usize,
        dy: f64,
    ) -> Result<Option<f64>, ()> {
        let w = self.wv[u * (self.n + 1) + v];
        if !(w > 0.0 && self.st[u] != y) {
            return Ok(None);
        }
        let d = self.lab[u] + self.lab[v] - w * 2.0;
        if !not_positive(d) {
            Ok(Some(if y == v { d } else { dy }))
        } else if self.label[y] == INNER {
            Ok(None)
        } else {
            Err(())
        }
    }

    /// Looks at every edge `(u, v)`: tight ones go to [`Self::on_found_edge`], the others
    /// update `slack[st[v]]`. `st[u]` is re-read after each tight edge since blossoms may
    /// form meanwhile; between tight edges the scan runs over plain slices.
    fn scan_vertex(&mut self, u: usize) -> bool {
        let mut from = 1;
        while let Some((v, w)) = self.scan_until_tight(u, from) {
            if self.on_found_edge(self.vertex_edge(u, v, w)) {
                return true;
            }
            from = v + 1;
        }
        false
    }

    /// Scans edges `(u, v)` for `v` in `from..=n`, updating slacks, and stops at the first
    /// tight edge that [`Self::on_found_edge`] acts on, returning `(v, w(u, v))`. A tight
    /// edge into an inner blossom is a no-op there, so it is skipped here. Nothing in
    /// the loop ([`row_scan`]) changes `st`, labels or edges, so it runs over plain
    /// slices. Kept out of line: inlined into its caller, it compiles to noticeably more
    /// instructions.
    ///
    /// A blossom's members all offer it the same slack, `dist(edge[u][b])`, so the first
    /// live member sets it (if better) and the rest change nothing: the loop only notes
    /// which blossoms it reached, and each is updated once afterwards. The updates touch
    /// only the slacks, which nothing else here reads, so their order does not matter.
    #[inline(never)]
    fn scan_until_tight(&mut self, u: usize, from: usize) -> Option<(usize, f64)> {
        let n1 = self.n + 1;
        // Padded so that the marks of any id can be read as whole words of 8.
        self.reached.resize(self.stride + 8, 0);
        let found = row_scan::RowScan {
            u,
            st_u: self.st[u],
            lab_u: self.lab[u],
            row: &self.wv[u * n1..(u + 1) * n1],
            st: &self.st[..n1],
            lab: &self.lab[..n1],
            label: &self.label,
            slack: &mut self.slack[..n1],
            dist: &mut self.slack_dist[..n1],
            reached: &mut self.reached,
        }
        .run(from, self.simd);
        self.update_reached_blossoms(u);
        found
    }

    /// The blossom half of [`Self::scan_until_tight`]: `update_slack(u, b)` for every
    /// blossom `b` it reached (all top-level), clearing the marks. The marks are read
    /// eight at a time, as most of them are clear.
    fn update_reached_blossoms(&mut self, u: usize) {
        let (first, last) = (self.n + 1, self.n_x);
        let mut start = first;
        while start <= last {
            let word: [u8; 8] = self.reached[start..start + 8]
                .try_into()
                .expect("eight marks");
            start += 8;
            if u64::from_ne_bytes(word) == 0 {
                continue;
            }
            for (b, r) in (start - 8..).zip(word) {
                if r == 0 {
                    continue;
                }
                self.reached[b] = 0;
                let d = self.dist(self.col_edge(b, u));
                if self.slack[b] == 0 || d < self.slack_dist[b] {
                    self.slack[b] = u;
                    self.store_slack_dist(b, d);
                }
            }
        }
    }

    /// Recomputes [`Self::tops`] if `st` changed since.
    fn refresh_tops(&mut self) {
        if self.tops_dirty {
            let n = self.n;
            self.tops.clear();
            self.tops
                .extend((n + 1..=self.n_x).filter(|&b| self.st[b] == b));
            self.tops_dirty = false;
        }
    }

    /// The dual step `d`: min over inner blossoms' `lab/2`, unlabeled ids' slack, and
    /// outer ids' slack/2 (Python `min` order, starting from +inf).
    ///
    /// On the way it lists, in [`Self::tight_slacks`], the top-level ids whose slack edge
    /// is tight now: after a step of 0 (the common case) only those, and blossoms formed
    /// meanwhile, can be found by [`Self::scan_slack_edges`].
    fn compute_delta(&mut self) -> f64 {
        if let Some(d) = self.delta_from_lists() {
            #[cfg(debug_assertions)]
            {
                let listed = self.tight_slacks.clone();
                let full = self.compute_delta_full();
                assert_eq!(d.to_bits(), full.to_bits(), "listed dual step");
                assert_eq!(listed, self.tight_slacks, "listed tight slacks");
            }
            return d;
        }
        self.compute_delta_full()
    }

    /// [`Self::compute_delta`] from the listed ids alone, when that decides it: if some
    /// listed candidate is `<= 0`, the step is the least of them. Every candidate below 0
    /// is listed (its `dist` or `lab` is below 0), and those not listed are `>= 0`, so
    /// the full minimum is that same value (Python's `min` keeps the first of equal
    /// values, but no label or distance is ever -0, so equal values are equal bits).
    fn delta_from_lists(&mut self) -> Option<f64> {
        let mut zero_inners = std::mem::take(&mut self.zero_inners);
        zero_inners.retain(|&b| self.is_zero_inner(b as usize));
        self.zero_inners = zero_inners;
        let (st, label, lab) = (&self.st[..], &self.label[..], &self.lab[..]);
        let (slack, slack_dist) = (&self.slack[..], &self.slack_dist[..]);
        let mut d = f64::INFINITY;
        for &b in &self.zero_inners {
            d = py_min(d, lab[b as usize] / 2.0);
        }
        let listed = &mut self.nonpositive_slacks;
        listed.retain(|&x| slack[x as usize] != 0 && not_positive(slack_dist[x as usize]));
        listed.sort_unstable();
        listed.dedup();
        let tight = &mut self.tight_slacks;
        tight.clear();
        for &x in listed.iter() {
            let x = x as usize;
            if st[x] != x {
                continue;
            }
            tight.push(x as u32);
            if label[x] == UNLABELED {
                d = py_min(d, slack_dist[x]);
            } else if label[x] == OUTER {
                d = py_min(d, slack_dist[x] / 2.0);
            }
        }
        not_positive(d).then_some(d)
    }

    /// [`Self::compute_delta`] by a pass over every id.
    fn compute_delta_full(&mut self) -> f64 {
        let (n, ids) = (self.n, self.n_x + 1);
        // Slices of exactly `ids` entries, so that indexing them needs no checks.
        let (st, label, lab) = (&self.st[..ids], &self.label[..ids], &self.lab[..ids]);
        let (slack, slack_dist) = (&self.slack[..ids], &self.slack_dist[..ids]);
        let tight = &mut self.tight_slacks;
        tight.clear();
        let mut d = f64::INFINITY;
        for b in n + 1..ids {
            if st[b] == b && label[b] == INNER {
                d = py_min(d, lab[b] / 2.0);
            }
        }
        for x in 1..ids {
            if st[x] == x && slack[x] != 0 {
                let dist = slack_dist[x];
                if not_positive(dist) {
                    tight.push(x as u32);
                }
                if label[x] == UNLABELED {
                    d = py_min(d, dist);
                } else if label[x] == OUTER {
                    d = py_min(d, dist / 2.0);
                }
            }
        }
        d
    }

    /// Applies `d` to the labels. Returns false (ending the whole matching) as soon as an
    /// outer vertex has `lab <= d` (tolerance compare); like the reference, labels of
    /// earlier vertices have already been changed by then.
    fn apply_delta(&mut self, d: f64) -> bool {
        self.bump_epoch();
        if d == 0.0 {
            return self.apply_zero_delta();
        }
        self.groups_stale = true;
        self.slack_dists_stale = true;
        self.snapshot_current = false;
        let (n, ids) = (self.n, self.n_x + 1);
        let (st, label, lab) = (&self.st[..ids], &self.label[..], &mut self.lab[..ids]);
        for u in 1..=n {
            let l = label[st[u]];
            if l == OUTER {
                if my_cmp(lab[u], d) <= 0 {
                    return false;
                }
                lab[u] -= d;
            } else if l == INNER {
                lab[u] += d;
            }
        }
        let label = &label[..ids];
        for b in n + 1..ids {
            if st[b] == b {
                if label[b] == OUTER {
                    lab[b] += d * 2.0;
                } else if label[b] == INNER {
                    lab[b] -= d * 2.0;
                    if not_positive(lab[b]) {
                        self.zero_inners.push(b as u32);
                    }
                }
            }
        }
        // `slack_dist` is now stale; `scan_slack_edges`, which always runs next,
        // refreshes each id as it reaches it. Every outer vertex passed `lab > d`.
        self.outer_nonpositive = false;
        true
    }

    /// [`Self::apply_delta`] of `d == 0`, the common case (a tight slack edge or an inner
    /// blossom at 0 set the step): adding and subtracting 0 leaves every label as it is,
    /// as no label is ever -0 (labels start positive or +0, and `x - x` and `x + (-x)`
    /// round to +0), so only the end test is left: an outer vertex with `lab <= 0`.
    /// Labels have not moved since the last nonzero step, after which every outer vertex
    /// had `lab > 0` (`x > d` implies `x - d > 0`), and vertices only become outer by
    /// [`Self::enqueue`], which notes a nonpositive label.
    fn apply_zero_delta(&mut self) -> bool {
        debug_assert!(
            self.lab[1..=self.n_x]
                .iter()
                .all(|l| l.to_bits() != (-0.0f64).to_bits()),
            "a label is -0, which adding 0 would change"
        );
        self.slack_dists_stale = false;
        debug_assert_eq!(
            self.outer_nonpositive,
            (1..=self.n).any(|u| self.label[self.st[u]] == OUTER && my_cmp(self.lab[u], 0.0) <= 0),
            "outer_nonpositive out of step with the labels"
        );
        !self.outer_nonpositive
    }

    /// After a dual step: every top-level id whose slack edge became tight is handled
    /// by [`Self::on_found_edge`]. The bound `n_x` is fixed when the loop starts.
    ///
    /// The dual step left [`Self::slack_dist`] stale; each id is refreshed just before
    /// it is tested, which gives the value a refresh right after the step would: labels
    /// do not change in this loop, and an id whose slack changes meanwhile gets either
    /// no slack or a fresh one (`set_slack` of a new blossom) from the same labels. If
    /// an augmentation ends the loop early, the next phase resets every slack.
    fn scan_slack_edges(&mut self) -> bool {
        if !self.slack_dists_stale {
            return self.scan_tight_slacks();
        }
        let n_x = self.n_x;
        let mut from = 1;
        while let Some(x) = self.next_tight_slack(from, n_x) {
            let e = self.e(self.slack[x], x);
            if self.on_found_edge(e) {
                return true;
            }
            if self.aborted {
                return false;
            }
            from = x + 1;
        }
        false
    }

    /// [`Self::scan_slack_edges`] after a step of 0, visiting only the ids that can be
    /// tight. Labels did not move, so a tight slack edge was already tight when
    /// [`Self::compute_delta`] listed the ids; and [`Self::on_found_edge`] gives an id a
    /// new slack only when it forms a blossom (`set_slack` of the new id; tree growth
    /// only clears slacks), so a new blossom after the current id joins the list.
    fn scan_tight_slacks(&mut self) -> bool {
        let n_x = self.n_x;
        let mut ids = std::mem::take(&mut self.tight_slacks);
        let (mut next, mut from) = (0, 1);
        let mut augmented = false;
        while let Some(x) = self.next_listed_tight_slack(&ids, &mut next) {
            debug_assert_eq!(
                self.next_tight_slack(from, n_x),
                Some(x),
                "the listed ids missed a tight slack"
            );
            self.new_blossom = 0;
            let e = self.e(self.slack[x], x);
            if self.on_found_edge(e) {
                augmented = true;
                break;
            }
            if self.aborted {
                break;
            }
            from = x + 1;
            let b = self.new_blossom;
            if b > x && b <= n_x {
                let at = next + ids[next..].partition_point(|&y| (y as usize) < b);
                ids.insert(at, b as u32);
            }
        }
        debug_assert!(
            augmented || self.aborted || self.next_tight_slack(from, n_x).is_none(),
            "the listed ids missed a tight slack"
        );
        self.tight_slacks = ids;
        augmented
    }

    /// The next listed id from `ids[*next..]` whose slack edge is tight now (the test of
    /// [`Self::next_tight_slack`], on exact distances).
    fn next_listed_tight_slack(&self, ids: &[u32], next: &mut usize) -> Option<usize> {
        while let Some(&x) = ids.get(*next) {
            *next += 1;
            let x = x as usize;
            let sx = self.slack[x];
            if sx != 0 && self.st[x] == x && self.st[sx] != x && not_positive(self.slack_dist[x]) {
                return Some(x);
            }
        }
        None
    }

    /// Refreshes the slack distances of ids `from..=n_x` in order (unless the dual step
    /// was 0, which left them exact) and stops at the first top-level id whose slack
    /// edge (from outside it) is tight. Only reads and that one cache are touched, so
    /// the loop runs over plain slices.
    fn next_tight_slack(&mut self, from: usize, n_x: usize) -> Option<usize> {
        let (n, n1, ids) = (self.n, self.n + 1, n_x + 1);
        let (st, slack, lab) = (&self.st[..ids], &self.slack[..ids], &self.lab[..]);
        let (wv, wt, inner) = (&self.wv[..], &self.wt[..], &self.inner[..]);
        let slack_dist = &mut self.slack_dist[..ids];
        let nonpositive = &mut self.nonpositive_slacks;
        let refresh = self.slack_dists_stale;
        for x in from..ids {
            let sx = slack[x];
            if sx == 0 {
                continue;
            }
            // Slack vertices are always vertices (set by `set_slack` or the BFS scan).
            debug_assert!(sx <= n);
            let fresh = || {
                if x <= n {
                    lab[sx] + lab[x] - wv[sx * n1 + x] * 2.0
                } else {
                    // `dist(edge[sx][x])`: the entry `(sx, i, w(sx, i))` of blossom `x`.
                    let i = inner[(x - n - 1) * n1 + sx] as usize;
                    lab[sx] + lab[i] - wt[i * n1 + sx] * 2.0
                }
            };
            if refresh {
                slack_dist[x] = fresh();
                if not_positive(slack_dist[x]) {
                    nonpositive.push(x as u32);
                }
            } else {
                debug_assert_eq!(slack_dist[x].to_bits(), fresh().to_bits(), "slack {x}");
            }
            if st[x] == x && st[sx] != x && not_positive(slack_dist[x]) {
                return Some(x);
            }
        }
        None
    }

    /// Expands every top-level inner blossom whose label is `<= 0` (tolerance compare,
    /// which [`not_positive`] reduces), in ascending id order up to the `n_x` of the
    /// start, as the reference's pass does. All of them are listed in
    /// [`Self::zero_inners`], including children that an expansion labels inner, so only
    /// the listed ones are visited.
    fn expand_zero_blossoms(&mut self) {
        let n_x = self.n_x;
        let mut done = self.n;
        while let Some(b) = self.next_zero_inner(done, n_x) {
            debug_assert!(
                !(done + 1..b).any(|c| self.is_zero_inner(c)),
                "a zero inner blossom was not listed"
            );
            self.expand_blossom(b);
            done = b;
        }
        debug_assert!(
            !(done + 1..=n_x).any(|c| self.is_zero_inner(c)),
            "a zero inner blossom was not listed"
        );
    }

    /// The least listed zero inner blossom in `after + 1..=last`.
    fn next_zero_inner(&self, after: usize, last: usize) -> Option<usize> {
        self.zero_inners
            .iter()
            .map(|&b| b as usize)
            .filter(|&b| b > after && b <= last && self.is_zero_inner(b))
            .min()
    }

    /// A top-level inner blossom whose label is `<= 0`.
    fn is_zero_inner(&self, b: usize) -> bool {
        self.st[b] == b && self.label[b] == INNER && not_positive(self.lab[b])
    }
}

/// `(&mut buf[dst..dst + len], &buf[src..src + len])` for two disjoint ranges.
fn split_rows<T>(buf: &mut [T], dst: usize, src: usize, len: usize) -> (&mut [T], &[T]) {
    if dst < src {
        let (lo, hi) = buf.split_at_mut(src);
        (&mut lo[dst..dst + len], &hi[..len])
    } else {
        let (lo, hi) = buf.split_at_mut(dst);
        (&mut hi[..len], &lo[src..src + len])
    }
}

/// Sets bit `i` of a bitset stored as `u64` words (bit `i % 64` of word `i / 64`).
fn set_bit(words: &mut [u64], i: usize) {
    words[i / 64] |= 1 << (i % 64);
}

/// Clears bit `i` of a bitset stored as `u64` words.
fn clear_bit(words: &mut [u64], i: usize) {
    words[i / 64] &= !(1 << (i % 64));
}

/// An input entry as the solver reads it: finite and positive, or 0.0 ("no edge").
fn sanitize(w: f64) -> f64 {
    if w > 0.0 && w.is_finite() {
        w
    } else {
        0.0
    }
}

/// Step cap for [`BlossomMatcher::spend`]: phases, dual updates and BFS pops together are
/// at most a few n² in exact arithmetic; 16 (n+1)² + 256 leaves ample headroom.
fn step_budget(n: usize) -> u64 {
    let n1 = n as u64 + 1;
    16 * n1 * n1 + 256
}

/// Convenience wrapper.
pub fn max_weight_matching(g: &WeightMatrix) -> Vec<Option<usize>> {
    BlossomMatcher::new().solve(g)
}

// ----- recorded instances ------------------------------------------------------------------

/// One solve as recorded by the simulator (`MURI_RECORD_MATCHINGS=FILE`, see
/// `policy::muri`) and replayed by `MATCH_REPLAY=FILE cargo bench -p muri --bench matching`.
///
/// A line is `n c;W;C;M`: `n` vertices, `c` classes, `W` the `c × c` class weights as hex
/// f64 bits (0 = no edge), `C` each vertex's class, `M` the mates returned (`-` = none).
#[derive(Clone, Debug)]
pub struct RecordedSolve {
    pub graph: WeightMatrix,
    pub mates: Vec<Option<usize>>,
}

impl RecordedSolve {
    /// The line for one solve over `c` classes (`weights[a * c + b]`, `None` = no edge).
    pub fn format(
        c: usize,
        weights: &[Option<f64>],
        class_of: &[u32],
        mates: &[Option<usize>],
    ) -> String {
        debug_assert_eq!(weights.len(), c * c);
        let hex: Vec<String> = weights
            .iter()
            .map(|w| format!("{:x}", w.unwrap_or(0.0).to_bits()))
            .collect();
        let classes: Vec<String> = class_of.iter().map(u32::to_string).collect();
        let mates: Vec<String> = mates
            .iter()
            .map(|m| m.map_or_else(|| "-".to_string(), |v| v.to_string()))
            .collect();
        format!(
            "{} {c};{};{};{}",
            class_of.len(),
            hex.join(","),
            classes.join(","),
            mates.join(",")
        )
    }

    /// Parses one line written by [`Self::format`]; the error says which part is wrong.
    pub fn parse(line: &str) -> Result<Self, String> {
        let parts: Vec<&str> = line.split(';').collect();
        let [head, weights, classes, mates] = parts[..] else {
            return Err(format!(
                "expected 4 ';'-separated parts, found {}",
                parts.len()
            ));
        };
        let head: Vec<usize> = head
            .split(' ')
            .map(|x| x.parse().map_err(|e| format!("header {x:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let [n, c] = head[..] else {
            return Err("header: expected `n c`".into());
        };
        let weights: Vec<f64> = weights
            .split(',')
            .map(|x| {
                u64::from_str_radix(x, 16)
                    .map(f64::from_bits)
                    .map_err(|e| format!("weight {x:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let class_of: Vec<u32> = classes
            .split(',')
            .map(|x| x.parse().map_err(|e| format!("class {x:?}: {e}")))
            .collect::<Result<_, _>>()?;
        let mates: Vec<Option<usize>> = mates
            .split(',')
            .map(|x| match x {
                "-" => Ok(None),
                _ => x.parse().map(Some).map_err(|e| format!("mate {x:?}: {e}")),
            })
            .collect::<Result<_, _>>()?;
        if weights.len() != c * c || class_of.len() != n || mates.len() != n {
            return Err(format!(
                "sizes: {} weights for {c} classes, {} classes and {} mates for {n} vertices",
                weights.len(),
                class_of.len(),
                mates.len()
            ));
        }
        if class_of.iter().any(|&k| k as usize >= c) || mates.iter().flatten().any(|&v| v >= n) {
            return Err("a class or mate is out of range".into());
        }
        let mut graph = WeightMatrix::default();
        graph.fill_from_classes(&class_of, |a, b| Some(weights[a as usize * c + b as usize]));
        Ok(Self { graph, mates })
    }
}
