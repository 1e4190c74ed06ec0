//! Percentiles of a sample of durations.

use std::time::Duration;

/// A sample's order statistics, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Sample size.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

fn rank(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

impl Summary {
    /// Summarises `sample` (empty gives zeros).
    pub fn of(sample: &[Duration]) -> Self {
        let mut us: Vec<f64> = sample.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        if us.is_empty() {
            return Self::default();
        }
        us.sort_by(f64::total_cmp);
        Self {
            n: us.len(),
            min: us[0],
            p50: rank(&us, 0.50),
            p90: rank(&us, 0.90),
            p99: rank(&us, 0.99),
            max: us[us.len() - 1],
            mean: us.iter().sum::<f64>() / us.len() as f64,
        }
    }

    /// As JSON, in microseconds.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n, "min_us": self.min, "p50_us": self.p50, "p90_us": self.p90,
            "p99_us": self.p99, "max_us": self.max, "mean_us": self.mean,
        })
    }
}
