//! Float helpers that mirror Python semantics.
//!
//! The reference simulator is Python; its numbers depend on `math.isclose` and on
//! `repr(float)`. Reproducing its results bit for bit means using the same rules.

/// Python's `math.isclose(a, b, rel_tol=rel, abs_tol=abs)`, operation for operation.
pub fn isclose(a: f64, b: f64, rel_tol: f64, abs_tol: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let diff = (b - a).abs();
    diff <= (rel_tol * b).abs() || diff <= (rel_tol * a).abs() || diff <= abs_tol
}

/// `math.isclose` with only a relative tolerance (the reference's most common form).
pub fn isclose_rel(a: f64, b: f64, rel_tol: f64) -> bool {
    isclose(a, b, rel_tol, 0.0)
}

/// Formats a float the way Python's `repr` does for the values we write
/// (shortest round-trip digits, `.0` on integral values), so that CSV logs
/// look like the reference's and read back to the same bits.
pub fn py_repr(x: f64) -> String {
    if x.is_finite() && x == x.trunc() && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isclose_matches_python_examples() {
        assert!(isclose_rel(1.0, 1.0 + 1e-10, 1e-9));
        assert!(!isclose_rel(1.0, 1.0 + 1e-8, 1e-9));
        assert!(isclose(1e7, 1e7 + 0.005, 1e-9, 1e-4));
        assert!(!isclose(1.0, 1.0 + 2e-4, 1e-9, 1e-4));
        assert!(!isclose_rel(0.0, 1e-300, 1e-5));
        assert!(!isclose(f64::INFINITY, f64::MAX, 1e-9, 0.0));
    }

    #[test]
    fn repr_like_python() {
        assert_eq!(py_repr(2.0), "2.0");
        assert_eq!(py_repr(0.1), "0.1");
        assert_eq!(py_repr(2911561.3), "2911561.3");
        assert_eq!(py_repr(-3.0), "-3.0");
    }
}
