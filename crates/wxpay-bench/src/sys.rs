//! The machine: memory of this process, load average, cores, and the RSA signing ceiling.

use std::time::{Duration, Instant};

use wxpay_proto::v3::rsa::RsaPrivateKey;

/// `VmRSS` and `VmHWM` (peak RSS) of this process in KiB, from `/proc/self/status` (Linux).
pub fn rss_kib() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// The 1-minute load average (Linux).
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A typical APIv3 Authorization message (an app prepay request).
const AUTH_MESSAGE: &str = "POST\n/v3/pay/transactions/app\n1700000000\n593BEC0C930BF1AFEB40B4A08C8FB242\n{\"appid\":\"wxd678efh567hg6787\",\"mchid\":\"1900007291\",\"description\":\"bench\",\"out_trade_no\":\"pay0000000000000000000000\",\"time_expire\":\"2024-01-01T12:30:00+08:00\",\"notify_url\":\"http://127.0.0.1:8080/notify/v3-demo\",\"amount\":{\"total\":1,\"currency\":\"CNY\"}}\n";

/// RSA-2048 PKCS#1 v1.5 SHA-256 signatures per second (aws-lc-rs through
/// `RsaPrivateKey::sign_sha256`) on `threads` threads for about `secs`.
pub fn sign_rate(key: &RsaPrivateKey, threads: usize, secs: f64) -> f64 {
    let dur = Duration::from_secs_f64(secs.max(0.05));
    let start = Instant::now();
    let signs: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0u64;
                    while start.elapsed() < dur {
                        std::hint::black_box(key.sign_sha256(AUTH_MESSAGE.as_bytes()));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    signs as f64 / start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if let Some((rss, hwm)) = rss_kib() {
            assert!(rss > 0 && hwm >= rss);
        }
        assert!(cores() >= 1);
    }
}
