//! The matching's innermost loop: one outer vertex `u` scans its row of edges (see
//! `BlossomMatcher::scan_until_tight`). A third of a solve is spent here, so besides the
//! plain loop there is a version for CPUs with AVX2 that looks at four vertices at a
//! time. Both make the same writes and return the same edge: lanes are only handed back
//! to the plain loop, never approximated, and debug builds run both and compare.

use super::{not_positive, INNER};

/// What one scan reads and writes: the row of `u` and the vertex part (`..n + 1`) of the
/// solver's arrays, except `label` and `reached`, which are indexed by top-level ids.
pub(super) struct RowScan<'a> {
    pub u: usize,
    pub st_u: usize,
    pub lab_u: f64,
    pub row: &'a [f64],
    pub st: &'a [usize],
    pub lab: &'a [f64],
    pub label: &'a [i8],
    pub slack: &'a mut [usize],
    pub dist: &'a mut [f64],
    pub reached: &'a mut [u8],
}

/// Debug builds: the plain loop's edge, slacks, distances and marks, for comparison.
#[cfg(all(debug_assertions, target_arch = "x86_64"))]
type PlainScan = (Option<(usize, f64)>, Vec<usize>, Vec<f64>, Vec<u8>);

/// Whether this CPU runs the four-lane scan (std caches the answer).
pub(super) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl RowScan<'_> {
    /// Scans `v` in `from..n + 1` and returns the first tight edge `(v, w(u, v))` that
    /// is acted on; see `BlossomMatcher::scan_until_tight` for what is updated. `simd`
    /// must only be true where [`simd_available`] is.
    pub(super) fn run(mut self, from: usize, simd: bool) -> Option<(usize, f64)> {
        let n1 = self.row.len();
        assert!(
            self.st.len() == n1
                && self.lab.len() == n1
                && self.slack.len() == n1
                && self.dist.len() == n1,
            "a row scan's vertex slices are n + 1 long"
        );
        #[cfg(target_arch = "x86_64")]
        if simd {
            debug_assert!(simd_available());
            #[cfg(debug_assertions)]
            let expected = self.plain_on_copies(from);
            // SAFETY: the caller only asks for SIMD where the CPU has AVX2, and every
            // vertex slice is `n1` long (asserted above).
            let found = unsafe { self.four_lanes(from) };
            #[cfg(debug_assertions)]
            self.check_against(expected, found);
            return found;
        }
        let _ = simd;
        self.plain(from, n1)
    }

    /// The plain loop over `v` in `from..to`.
    #[inline(always)]
    fn plain(&mut self, from: usize, to: usize) -> Option<(usize, f64)> {
        for v in from..to {
            let (w, sv) = (self.row[v], self.st[v]);
            if w > 0.0 && self.st_u != sv {
                // `dist(edge[u][v])` of a vertex pair: the entry is `(u, v, w)`.
                let d = self.lab_u + self.lab[v] - w * 2.0;
                if not_positive(d) {
                    if self.label[sv] == INNER {
                        continue;
                    }
                    return Some((v, w));
                }
                // `update_slack(u, sv)`: the slack of `edge[u][sv]`.
                if sv == v {
                    if self.slack[v] == 0 || d < self.dist[v] {
                        (self.slack[v], self.dist[v]) = (self.u, d);
                    }
                } else {
                    // A vertex's top-level id is itself or a blossom.
                    self.reached[sv] = 1;
                }
            }
        }
        None
    }

    /// The plain loop four vertices at a time. A group of four with a tight edge that is
    /// acted on goes to the plain loop, which stops there; otherwise each lane makes
    /// the plain loop's update: the same `f64` operations in the same order, the same
    /// compares (ordered, so NaN compares as the plain loop's), and blends in place of
    /// branches. The tail of fewer than four goes to the plain loop too.
    ///
    /// # Safety
    /// The CPU must have AVX2, and `st`, `lab`, `slack` and `dist` must be as long as `row`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn four_lanes(&mut self, from: usize) -> Option<(usize, f64)> {
        use std::arch::x86_64::*;
        let n1 = self.row.len();
        let zero = _mm256_setzero_pd();
        let two = _mm256_set1_pd(2.0);
        let lab_u = _mm256_set1_pd(self.lab_u);
        let st_u = _mm256_set1_epi64x(self.st_u as i64);
        let u = _mm256_castsi256_pd(_mm256_set1_epi64x(self.u as i64));
        let no_id = _mm256_setzero_si256();
        let mut ids = _mm256_setr_epi64x(
            from as i64,
            from as i64 + 1,
            from as i64 + 2,
            from as i64 + 3,
        );
        let step = _mm256_set1_epi64x(4);
        let mut v = from;
        while v + 4 <= n1 {
            // SAFETY (all loads and stores): `v + 4 <= n1`, the length of every slice.
            let w = unsafe { _mm256_loadu_pd(self.row.as_ptr().add(v)) };
            let sv = unsafe { _mm256_loadu_si256(self.st.as_ptr().add(v).cast()) };
            let lab_v = unsafe { _mm256_loadu_pd(self.lab.as_ptr().add(v)) };
            // `w > 0.0 && st_u != sv`
            let same_top = _mm256_castsi256_pd(_mm256_cmpeq_epi64(sv, st_u));
            let live = _mm256_andnot_pd(same_top, _mm256_cmp_pd::<_CMP_GT_OQ>(w, zero));
            let d = _mm256_sub_pd(_mm256_add_pd(lab_u, lab_v), _mm256_mul_pd(w, two));
            let tight = _mm256_andnot_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(d, zero), live);
            // Tight edges into inner blossoms are skipped (and common); any other is
            // acted on, and the plain loop finds the first.
            let mut tops = [0usize; 4];
            let tight_lanes = _mm256_movemask_pd(tight);
            if tight_lanes != 0 {
                unsafe { _mm256_storeu_si256(tops.as_mut_ptr().cast(), sv) };
                let acted_on = (0..4)
                    .any(|lane| tight_lanes & (1 << lane) != 0 && self.label[tops[lane]] != INNER);
                if acted_on {
                    return self.plain(v, v + 4);
                }
            }
            let live = _mm256_andnot_pd(tight, live);
            let own_top = _mm256_castsi256_pd(_mm256_cmpeq_epi64(sv, ids));
            let slack_ptr = unsafe { self.slack.as_mut_ptr().add(v) };
            let dist_ptr = unsafe { self.dist.as_mut_ptr().add(v) };
            let slack = unsafe { _mm256_loadu_si256(slack_ptr.cast()) };
            let dist = unsafe { _mm256_loadu_pd(dist_ptr) };
            // `slack[v] == 0 || d < dist[v]`, for live vertices that are top-level.
            let no_slack = _mm256_castsi256_pd(_mm256_cmpeq_epi64(slack, no_id));
            let closer = _mm256_or_pd(no_slack, _mm256_cmp_pd::<_CMP_LT_OQ>(d, dist));
            let update = _mm256_and_pd(_mm256_and_pd(live, own_top), closer);
            let slack = _mm256_blendv_pd(_mm256_castsi256_pd(slack), u, update);
            unsafe {
                _mm256_storeu_pd(slack_ptr.cast(), slack);
                _mm256_storeu_pd(dist_ptr, _mm256_blendv_pd(dist, d, update));
            }
            // `reached[sv] = 1` for live members of blossoms; other lanes mark id 0,
            // which is never read. Without branches: lanes mix in no pattern a branch
            // predictor learns.
            let members = _mm256_andnot_pd(own_top, live);
            let marked = _mm256_blendv_pd(zero, _mm256_castsi256_pd(sv), members);
            unsafe { _mm256_storeu_pd(tops.as_mut_ptr().cast(), marked) };
            for top in tops {
                self.reached[top] = 1;
            }
            v += 4;
            ids = _mm256_add_epi64(ids, step);
        }
        self.plain(v, n1)
    }

    /// Debug builds: the plain loop's result and writes, made on copies.
    #[cfg(all(debug_assertions, target_arch = "x86_64"))]
    fn plain_on_copies(&self, from: usize) -> PlainScan {
        let (mut slack, mut dist, mut reached) = (
            self.slack.to_vec(),
            self.dist.to_vec(),
            self.reached.to_vec(),
        );
        let mut copy = RowScan {
            slack: &mut slack,
            dist: &mut dist,
            reached: &mut reached,
            ..*self
        };
        let found = copy.plain(from, self.row.len());
        (found, slack, dist, reached)
    }

    /// Debug builds: the four-lane scan must match the plain loop bit for bit.
    #[cfg(all(debug_assertions, target_arch = "x86_64"))]
    fn check_against(&self, (found, slack, dist, reached): PlainScan, got: Option<(usize, f64)>) {
        assert_eq!(
            found.map(|(v, w)| (v, w.to_bits())),
            got.map(|(v, w)| (v, w.to_bits())),
            "four-lane scan of {}: edge",
            self.u
        );
        assert_eq!(slack, self.slack, "four-lane scan of {}: slack", self.u);
        let bits = |d: &[f64]| d.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&dist),
            bits(self.dist),
            "four-lane scan of {}: dist",
            self.u
        );
        // Mark 0 is the four-lane scan's scratch.
        assert_eq!(
            reached[1..],
            self.reached[1..],
            "four-lane scan of {}: marks",
            self.u
        );
    }
}
