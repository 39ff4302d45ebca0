//! Reading the Prometheus text exposition back: for the tools that judge a running
//! gateway by its `/metrics` (the chaos runner, the relay benchmark).

/// A percentile of a Prometheus histogram, interpolated inside its bucket.
pub fn histogram_quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in &buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = count - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_interpolate_inside_buckets() {
        let m = "sgw_failover_seconds_bucket{le=\"0.01\"} 0\n\
                 sgw_failover_seconds_bucket{le=\"0.02\"} 10\n\
                 sgw_failover_seconds_bucket{le=\"0.04\"} 20\n\
                 sgw_failover_seconds_bucket{le=\"+Inf\"} 20\n";
        let p50 = histogram_quantile(m, "sgw_failover_seconds", 0.5).unwrap();
        assert!((p50 - 0.02).abs() < 1e-9, "{p50}");
        let p75 = histogram_quantile(m, "sgw_failover_seconds", 0.75).unwrap();
        assert!((p75 - 0.03).abs() < 1e-9, "{p75}");
        assert_eq!(histogram_quantile("", "sgw_failover_seconds", 0.5), None);
    }
}
