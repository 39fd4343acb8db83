//! Formats that do not fit a matrix's shape: every conversion to a format goes through
//! [`fitted`], which picks the nearest format that fits (`Format::fitting`: q2 → q4 → q8 → f16)
//! and logs each distinct fallback once per process, so a model with an odd width is served
//! rather than refused and says so once instead of once per matrix.

use std::collections::BTreeSet;
use std::sync::Mutex;

use moe_kernels::{Fit, Format};

/// Fallbacks already logged in this process.
static LOGGED: Mutex<BTreeSet<Fit>> = Mutex::new(BTreeSet::new());

/// The format a `cols`-wide matrix asked to be stored as `format` is stored in; a fallback is
/// logged the first time this process meets it.
pub fn fitted(format: Format, cols: usize) -> Format {
    let fit = format.fitting(cols);
    if let Some(reason) = fit.reason() {
        let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
        if logged.insert(fit) {
            tracing::warn!(
                asked = %fit.asked,
                stored = %fit.format,
                %reason,
                "a matrix does not fit its format; stored in the nearest wider one"
            );
        }
    }
    fit.format
}

/// Every distinct fallback this process has made, in order.
pub fn logged() -> Vec<Fit> {
    let logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    logged.iter().copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fallback_is_recorded_once_and_a_fitting_format_not_at_all() {
        assert_eq!(fitted(Format::Q4, 64), Format::Q4);
        assert_eq!(fitted(Format::Q4, 72), Format::F16);
        assert_eq!(fitted(Format::Q4, 72), Format::F16);
        let seen: Vec<Fit> = logged().into_iter().filter(|f| f.cols == 72).collect();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(logged().iter().all(|f| f.fell_back()));
    }
}
