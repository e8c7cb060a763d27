//! `soak`: a steady rate of lifecycles for a long time, RSS and open files sampled.

use crate::*;

/// Least-squares slope of `ys` over `xs` (per unit of `xs`).
pub(crate) fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// What `soak` measured.
#[derive(Debug, serde::Serialize)]
pub(crate) struct SoakReport {
    pub(crate) rate_per_second: f64,
    pub(crate) minutes: f64,
    pub(crate) warmup_minutes: f64,
    pub(crate) lifecycles: u64,
    pub(crate) failed: u64,
    pub(crate) after_warmup: AfterWarmup,
    pub(crate) endpoints: Vec<EndpointReport>,
    pub(crate) samples: Vec<SoakSample>,
}

/// The server's memory and files after the warm-up.
#[derive(Debug, serde::Serialize)]
pub(crate) struct AfterWarmup {
    pub(crate) rss_min_bytes: f64,
    pub(crate) rss_max_bytes: f64,
    pub(crate) rss_slope_bytes_per_hour: f64,
    pub(crate) fds_min: f64,
    pub(crate) fds_max: f64,
    pub(crate) fds_slope_per_hour: f64,
}

/// One sample of the server.
#[derive(Debug, serde::Serialize)]
pub(crate) struct SoakSample {
    pub(crate) t_seconds: f64,
    pub(crate) rss_bytes: u64,
    pub(crate) open_fds: usize,
    pub(crate) server_cpu_seconds: f64,
    pub(crate) lifecycles: u64,
    pub(crate) failed: u64,
}

impl SoakReport {
    pub(crate) fn print(&self, out: &mut String) {
        let a = &self.after_warmup;
        let mib = |v: f64| v / 1048576.0;
        *out += &format!(
            "soak: {}/s for {} min: {} lifecycles, {} failed; after {} min of warm-up RSS {:.1}–{:.1} MiB (slope {:.2} MiB/h), open fds {}–{} (slope {:.1}/h)\n",
            self.rate_per_second,
            self.minutes,
            self.lifecycles,
            self.failed,
            self.warmup_minutes,
            mib(a.rss_min_bytes),
            mib(a.rss_max_bytes),
            mib(a.rss_slope_bytes_per_hour),
            a.fds_min,
            a.fds_max,
            a.fds_slope_per_hour
        );
    }
}

pub(crate) async fn soak(
    server: &Server,
    rate: f64,
    minutes: f64,
    warmup_minutes: f64,
    sample_seconds: f64,
) -> anyhow::Result<SoakReport> {
    let client = client();
    let endpoints: Arc<[Endpoint; 4]> = Arc::new(Default::default());
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // At most this many lifecycles in flight: a stalled server shows as failures, not as an
    // ever-growing client.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let started = Instant::now();
    let total = Duration::from_secs_f64(minutes * 60.0);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut next_sample = Instant::now();
    let mut samples = Vec::new();
    let mut i = 0u64;
    let cpu0 = server.cpu_seconds()?;
    while started.elapsed() < total {
        ticker.tick().await;
        if Instant::now() >= next_sample {
            let t = started.elapsed().as_secs_f64();
            samples.push(SoakSample {
                t_seconds: t,
                rss_bytes: server.rss_bytes()?,
                open_fds: server.open_fds()?,
                server_cpu_seconds: server.cpu_seconds()? - cpu0,
                lifecycles: done.load(Ordering::Relaxed),
                failed: failed.load(Ordering::Relaxed),
            });
            next_sample += Duration::from_secs_f64(sample_seconds);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        i += 1;
        let (client, base, endpoints, done, failed) = (
            client.clone(),
            server.base.clone(),
            endpoints.clone(),
            done.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            let ok = one_lifecycle(&client, &base, &format!("soak-{}", i % 1000), &endpoints).await;
            if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await;
    let after_warmup: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.t_seconds >= warmup_minutes * 60.0)
        .collect();
    let hours: Vec<f64> = after_warmup.iter().map(|s| s.t_seconds / 3600.0).collect();
    let rss: Vec<f64> = after_warmup.iter().map(|s| s.rss_bytes as f64).collect();
    let fds: Vec<f64> = after_warmup.iter().map(|s| s.open_fds as f64).collect();
    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let min = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let after_warmup = AfterWarmup {
        rss_min_bytes: min(&rss),
        rss_max_bytes: max(&rss),
        rss_slope_bytes_per_hour: slope(&hours, &rss),
        fds_min: min(&fds),
        fds_max: max(&fds),
        fds_slope_per_hour: slope(&hours, &fds),
    };
    Ok(SoakReport {
        rate_per_second: rate,
        minutes,
        warmup_minutes,
        lifecycles: done.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        after_warmup,
        endpoints: summaries(&endpoints[..]),
        samples,
    })
}
