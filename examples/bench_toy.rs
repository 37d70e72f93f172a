//! Throughput of both training stages of the toy model on the default
//! adapter: steps per second of caption-text pretraining and of the
//! Flamingo stage (forward, backward, clip, AdamW, loss readback), after a
//! few warm-up steps. `--profile` also times every dispatch of a Flamingo
//! step on its own, grouped by kernel, and the clip as one submission, and
//! prints the clip's share of the total.
//!
//! ```text
//! cargo run --release --example bench_toy -- [--steps N] [--profile]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use wgpu_gradclip::toy::{native, ToyConfig, Trainer};

fn main() {
    let mut steps = 50u32;
    let mut profile = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--steps" => steps = args.next().and_then(|v| v.parse().ok()).unwrap_or(steps),
            "--profile" => profile = true,
            other => {
                eprintln!("error: unknown option {other:?} (use --steps N, --profile)");
                std::process::exit(2);
            }
        }
    }
    // The default model; a small image pool only shortens the setup.
    let config = ToyConfig {
        train_images: 256,
        eval_images: 16,
        ..ToyConfig::default()
    };
    let result = pollster::block_on(async {
        let (device, queue, adapter) = native::open_device().await?;
        let mut trainer = Trainer::new(&device, &queue, config).await?;
        let warmup = 5;
        for _ in 0..warmup {
            trainer.pretrain_step().await?;
        }
        let t = Instant::now();
        for _ in 0..steps {
            trainer.pretrain_step().await?;
        }
        let text = f64::from(steps) / t.elapsed().as_secs_f64();
        trainer.begin_flamingo();
        for _ in 0..warmup {
            trainer.step().await?;
        }
        let t = Instant::now();
        for _ in 0..steps {
            trainer.step().await?;
        }
        let flamingo = f64::from(steps) / t.elapsed().as_secs_f64();
        let [f, b, u] = trainer.dispatch_counts();
        println!("adapter: {adapter}");
        println!("text pretraining: {text:.2} steps/s ({steps} steps, batch 16)");
        println!(
            "flamingo stage:   {flamingo:.2} steps/s ({steps} steps, batch 16, {} dispatches + {} for the clip)",
            f + b + u,
            trainer.clip_dispatches()
        );
        if profile {
            let mut by_kernel: BTreeMap<String, (f64, u32, u64)> = BTreeMap::new();
            let timings = trainer.profile(3).await?;
            let all: f64 = timings.iter().map(|t| t.seconds).sum();
            let clip: f64 = timings
                .iter()
                .filter(|t| t.name.starts_with("Clip"))
                .map(|t| t.seconds)
                .sum();
            for t in timings {
                let kernel = t.name.split(' ').next().unwrap_or("?").to_string();
                let e = by_kernel.entry(kernel).or_default();
                e.0 += t.seconds;
                e.1 += 1;
                e.2 += t.multiply_adds;
            }
            let mut rows: Vec<_> = by_kernel.into_iter().collect();
            rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
            println!("per-kernel time of one Flamingo step, each dispatch submitted alone:");
            for (k, (secs, n, macs)) in rows {
                let work = if macs > 0 {
                    format!(
                        "  {:>6.1} M multiply-adds, {:>5.2} GFLOP/s",
                        macs as f64 / 1e6,
                        2.0 * macs as f64 / secs / 1e9
                    )
                } else {
                    String::new()
                };
                println!("  {k:<22} {n:>3} submissions {:>8.2} ms{work}", secs * 1e3);
            }
            println!(
                "clipping: {:.2} ms of {:.2} ms for forward, backward and clip, each submitted alone: {:.1}%",
                clip * 1e3,
                all * 1e3,
                100.0 * clip / all
            );
        }
        Ok::<_, wgpu_gradclip::toy::ToyError>(())
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
