//! Trains the tiny Flamingo-style model end to end on the default adapter
//! (a GPU, or the CPU Vulkan driver) and writes what it did to a run
//! folder. The first command to try:
//!
//! ```text
//! cargo run --release --example train_toy
//! ```
//!
//! The language model is first pretrained on caption text alone (cached
//! under `runs/cache/`), then frozen; the Flamingo stage then trains the
//! Perceiver, the gated cross-attention and two embedding rows, clipping
//! the gradients between backward and AdamW through the library's public
//! API. `--help` lists the options.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use wgpu_gradclip::toy::native::{self, MetricRow};
use wgpu_gradclip::toy::{ClipChoice, Stage, ToyConfig, ToyError, Trainer};

const HELP: &str = "\
train_toy: train the tiny Flamingo-style model with WGSL kernels

options:
  --steps N             Flamingo-stage steps (default 3000)
  --pretrain-steps N    caption-text pretraining steps (default 300; cached)
  --batch N             sequences per batch, even (default 16)
  --lr F                Flamingo-stage learning rate (default 1e-3)
  --pretrain-lr F       pretraining learning rate (default 2e-3)
  --warmup N            warmup steps, the first at lr 0 (default 100)
  --seed N              seed of data, weights and batches (default 0)
  --clip-mode MODE      per-group (OpenFlamingo FSDP), global (DDP) or off
  --max-norm F          clip max_norm (default 0.25; OpenFlamingo uses 1.0,
                        which almost never fires on a model this small)
  --name NAME           run folder runs/NAME (default: default)
  --run-dir DIR         run folder, instead of runs/NAME
  --resume [FILE]       continue from a checkpoint (default RUN/checkpoint.safetensors)
  --init-from FILE      start from the weights in FILE (safetensors)
  --dump-dataset FILE   write the generated images, tokens and labels too
  --checkpoint-every N  steps between checkpoints (default 500)
  --log-every N         steps between progress lines (default 50)
  --train-images N      images in the training pool (default 16384)
  --eval-images N       held-out images (default 160; 1.5 captions each)
  --no-cache            do not read or write the pretrained-LM cache
adapter: WGPU_BACKEND (vulkan, gl, metal, dx12) and WGPU_ADAPTER_NAME";

struct Args {
    config: ToyConfig,
    run_dir: PathBuf,
    resume: Option<PathBuf>,
    init_from: Option<PathBuf>,
    dump: Option<PathBuf>,
    checkpoint_every: u32,
    log_every: u32,
    cache: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut config = ToyConfig::default();
    let mut name = String::from("default");
    let mut run_dir = None;
    let (mut resume, mut init_from, mut dump) = (None, None, None);
    let (mut checkpoint_every, mut log_every, mut cache) = (500, 50, true);
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        let mut value = |what: &str| it.next().ok_or_else(|| format!("{flag} needs {what}"));
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--steps" => config.steps = num(&flag, value("a number")?)?,
            "--pretrain-steps" => config.pretrain_steps = num(&flag, value("a number")?)?,
            "--batch" => config.batch = num(&flag, value("a number")?)?,
            "--lr" => config.lr = num(&flag, value("a number")?)?,
            "--pretrain-lr" => config.pretrain_lr = num(&flag, value("a number")?)?,
            "--warmup" => config.warmup = num(&flag, value("a number")?)?,
            "--seed" => config.seed = num(&flag, value("a number")?)?,
            "--max-norm" => config.max_norm = num(&flag, value("a number")?)?,
            "--train-images" => config.train_images = num(&flag, value("a number")?)?,
            "--eval-images" => config.eval_images = num(&flag, value("a number")?)?,
            "--checkpoint-every" => checkpoint_every = num(&flag, value("a number")?)?,
            "--log-every" => log_every = num::<u32>(&flag, value("a number")?)?.max(1),
            "--clip-mode" => {
                let v = value("per-group, global or off")?;
                config.clip = ClipChoice::parse(&v).ok_or_else(|| {
                    format!("--clip-mode must be per-group, global or off, not {v:?}")
                })?;
            }
            "--name" => name = value("a name")?,
            "--run-dir" => run_dir = Some(PathBuf::from(value("a folder")?)),
            "--init-from" => init_from = Some(PathBuf::from(value("a file")?)),
            "--dump-dataset" => dump = Some(PathBuf::from(value("a file")?)),
            "--no-cache" => cache = false,
            "--resume" => {
                let file = it.next_if(|v| !v.starts_with("--")).map(PathBuf::from);
                resume = Some(file.unwrap_or_default());
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    config.validate().map_err(|e| e.to_string())?;
    let run_dir = run_dir.unwrap_or_else(|| PathBuf::from("runs").join(&name));
    let resume = resume.map(|f: PathBuf| {
        if f.as_os_str().is_empty() {
            run_dir.join("checkpoint.safetensors")
        } else {
            f
        }
    });
    if resume.is_some() && init_from.is_some() {
        return Err("--resume and --init-from exclude each other".into());
    }
    Ok(Some(Args {
        config,
        run_dir,
        resume,
        init_from,
        dump,
        checkpoint_every,
        log_every,
        cache,
    }))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    match pollster::block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(ToyError::Device(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Key of the pretrained-LM cache: every setting that shapes it.
fn cache_key(c: &ToyConfig) -> String {
    let mut h = DefaultHasher::new();
    format!(
        "data v2 {} {} {} {} {} {} {} {} {} {} {}",
        c.seed,
        c.batch,
        c.context,
        c.d_model,
        c.heads,
        c.mlp_mult,
        c.lm_layers,
        c.head_init_std,
        c.train_images,
        c.pretrain_steps,
        c.pretrain_lr
    )
    .hash(&mut h);
    format!("lm-{:016x}.safetensors", h.finish())
}

/// Flamingo-stage rows of a metrics CSV written by `native::metrics_csv`.
fn parse_metrics(csv: &str, groups: &[String]) -> Vec<MetricRow> {
    csv.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            if f.first() != Some(&"flamingo") || f.len() < 5 + 2 * groups.len() {
                return None;
            }
            let mut per_group = Vec::with_capacity(groups.len());
            for (i, g) in groups.iter().enumerate() {
                per_group.push((
                    g.clone(),
                    f[4 + 2 * i].parse().ok()?,
                    f[5 + 2 * i].parse().ok()?,
                ));
            }
            Some(MetricRow {
                stage: "flamingo",
                step: f[1].parse().ok()?,
                loss: f[2].parse().ok()?,
                lr: f[3].parse().ok()?,
                groups: per_group,
                seconds: f.last()?.parse().ok()?,
            })
        })
        .collect()
}

fn groups_line(groups: &[(String, f64, f32)]) -> String {
    groups
        .iter()
        .map(|(name, norm, c)| {
            let short = name
                .replace("gated_cross_attn_layers.", "xattn.")
                .replace("input_embeddings", "embed");
            format!("{short} {norm:.4}x{c:.2}")
        })
        .collect::<Vec<_>>()
        .join("  ")
}

async fn run(args: Args) -> Result<(), ToyError> {
    let started = Instant::now();
    let config = args.config.clone();

    // The adapter comes from WGPU_BACKEND / WGPU_ADAPTER_NAME, or the default.
    let (device, queue, adapter) = native::open_device().await?;
    println!("adapter: {adapter}");

    // Data, weights, kernels, and the cached vision features.
    let mut trainer = Trainer::new(&device, &queue, config.clone()).await?;
    let [f, b, u] = trainer.dispatch_counts();
    println!(
        "model: {} trainable parameters in the Flamingo stage; {} + {} + {} dispatches per step, \
         + {} for the clip; setup {:.1}s",
        trainer.model().trainable_count(Stage::Flamingo),
        f,
        b,
        u,
        trainer.clip_dispatches(),
        started.elapsed().as_secs_f64()
    );
    std::fs::create_dir_all(&args.run_dir)
        .map_err(|e| ToyError::Checkpoint(format!("{}: {e}", args.run_dir.display())))?;
    if let Some(path) = &args.dump {
        native::dump_dataset(&trainer, path, config.steps)?;
        println!("dataset: wrote {}", path.display());
    }

    // Where the weights come from: a checkpoint, given weights, the cache,
    // or text pretraining.
    let mut text_only: Option<f32> = None;
    let mut pretrained = false;
    if let Some(path) = &args.resume {
        let ckpt = native::load_checkpoint(path)?;
        ckpt.apply(&mut trainer, true)?;
        text_only = ckpt
            .metadata
            .get("text_only_accuracy")
            .and_then(|v| v.parse().ok());
        pretrained = trainer.stage() == Stage::Flamingo;
        println!(
            "resumed: {} at {:?} step {}",
            path.display(),
            trainer.stage(),
            trainer.steps_done()
        );
    } else if let Some(path) = &args.init_from {
        let ckpt = native::load_checkpoint(path)?;
        let n = ckpt.apply(&mut trainer, false)?;
        pretrained = ckpt.has("lang_encoder.transformer.wte.weight");
        println!("init: {n} tensors from {}", path.display());
        // Trained cross-attention is no longer the text-only model: keep the
        // figure its run measured, if any.
        if ckpt
            .tensors
            .iter()
            .any(|t| t.0.contains("gated_cross_attn_layers"))
        {
            text_only = Some(
                ckpt.metadata
                    .get("text_only_accuracy")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f32::NAN),
            );
        }
    }
    let cache = PathBuf::from("runs/cache").join(cache_key(&config));
    if !pretrained && args.cache && args.resume.is_none() && cache.exists() {
        native::load_checkpoint(&cache)?.apply(&mut trainer, false)?;
        pretrained = true;
        println!(
            "pretraining: loaded the cached language model {}",
            cache.display()
        );
    }
    let mut rows: Vec<MetricRow> = Vec::new();
    if !pretrained {
        let t0 = Instant::now();
        let first = trainer.steps_done();
        for step in first..config.pretrain_steps {
            let loss = trainer.pretrain_step().await?;
            rows.push(MetricRow {
                stage: "text",
                step,
                loss,
                lr: f32::NAN,
                groups: Vec::new(),
                seconds: started.elapsed().as_secs_f64(),
            });
            if step % args.log_every == 0 || step + 1 == config.pretrain_steps {
                let rate = f64::from(step + 1 - first) / t0.elapsed().as_secs_f64();
                println!(
                    "pretrain {:>5}/{}  loss {loss:.4}  {rate:.1} steps/s",
                    step + 1,
                    config.pretrain_steps
                );
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = config.pretrain_steps - first;
        println!(
            "pretraining: {n} steps in {secs:.1}s ({:.1} steps/s)",
            f64::from(n) / secs
        );
        if args.cache {
            let lm: Vec<(&str, String)> = vec![("cache_key", cache_key(&config))];
            native::save_checkpoint(&trainer, &cache, false, &lm).await?;
        }
    }
    if trainer.stage() == Stage::Text {
        trainer.begin_flamingo();
    }

    // With the gates at 0 the model is exactly the text-only language model.
    if text_only.is_none() && trainer.steps_done() == 0 {
        let t0 = Instant::now();
        let e = trainer.evaluate().await?;
        println!(
            "text-only model: caption exact match {:.3} ({} captions, {:.1}s)",
            e.accuracy,
            e.total,
            t0.elapsed().as_secs_f64()
        );
        text_only = Some(e.accuracy);
    }
    let text_only = text_only.unwrap_or(f32::NAN);

    let groups: Vec<String> = trainer.step_group_names();
    let meta = |trainer: &Trainer| -> Vec<(&'static str, String)> {
        vec![
            ("seed", config.seed.to_string()),
            ("clip_mode", trainer.clip().0.as_str().to_string()),
            ("max_norm", trainer.clip().1.to_string()),
            ("text_only_accuracy", text_only.to_string()),
        ]
    };
    let ckpt_path = args.run_dir.join("checkpoint.safetensors");
    let t0 = Instant::now();
    let first = trainer.steps_done();
    let mut clipped_steps = 0u32;
    let mut clipped_by_group = vec![0u32; groups.len()];
    let mut last_loss = f32::NAN;
    for step in first..config.steps {
        let s = trainer.step().await?;
        last_loss = s.loss;
        if s.groups.iter().any(|g| g.2 < 1.0) {
            clipped_steps += 1;
        }
        for (i, g) in s.groups.iter().enumerate() {
            clipped_by_group[i] += u32::from(g.2 < 1.0);
        }
        if step % args.log_every == 0 || step + 1 == config.steps {
            let rate = f64::from(step + 1 - first) / t0.elapsed().as_secs_f64();
            println!(
                "step {:>5}/{}  loss {:.4}  {}  {rate:.1} steps/s",
                step + 1,
                config.steps,
                s.loss,
                groups_line(&s.groups)
            );
            let _ = std::io::stdout().flush();
        }
        rows.push(MetricRow {
            stage: "flamingo",
            step,
            loss: s.loss,
            lr: s.lr,
            groups: s.groups,
            seconds: started.elapsed().as_secs_f64(),
        });
        if args.checkpoint_every > 0 && (step + 1) % args.checkpoint_every == 0 {
            native::save_checkpoint(&trainer, &ckpt_path, true, &meta(&trainer)).await?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = config.steps.saturating_sub(first);
    if n > 0 {
        println!(
            "flamingo stage: {n} steps in {secs:.1}s ({:.1} steps/s)",
            f64::from(n) / secs
        );
        let share = |c: u32| 100.0 * f64::from(c) / f64::from(n);
        let per_group: Vec<String> = groups
            .iter()
            .zip(&clipped_by_group)
            .map(|(g, &c)| format!("{g} {:.0}%", share(c)))
            .collect();
        println!(
            "clipping ({}, max_norm {}): coefficient < 1 on {:.0}% of steps ({})",
            trainer.clip().0.as_str(),
            trainer.clip().1,
            share(clipped_steps),
            per_group.join(", ")
        );
    }
    native::save_checkpoint(&trainer, &ckpt_path, true, &meta(&trainer)).await?;

    let eval = trainer.evaluate().await?;
    println!(
        "held-out caption exact match {:.3} (single image {:.3}, second of two images {:.3}, {} captions)",
        eval.accuracy, eval.single_accuracy, eval.second_image_accuracy, eval.total
    );
    let samples = trainer.samples(8).await?;
    let dir = args.run_dir.join("samples");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ToyError::Checkpoint(format!("{}: {e}", dir.display())))?;
    let mut text = String::new();
    for (i, s) in samples.iter().enumerate() {
        native::write_png(&dir.join(format!("sample_{i:02}.png")), &s.rgba, s.size, 4)?;
        text.push_str(&format!(
            "sample_{i:02}.png\tgenerated: {}\ttruth: {}\n",
            s.caption, s.truth
        ));
    }
    let write = |name: &str, body: String| {
        let path = args.run_dir.join(name);
        std::fs::write(&path, body)
            .map_err(|e| ToyError::Checkpoint(format!("{}: {e}", path.display())))
    };
    write("samples/captions.txt", text)?;
    // A resumed run keeps the rows its earlier part wrote.
    let mut csv = native::metrics_csv(&rows, &groups);
    if args.resume.is_some() {
        if let Ok(old) = std::fs::read_to_string(args.run_dir.join("metrics.csv")) {
            let keep = old.lines().skip(1).filter(|l| {
                let mut f = l.split(',');
                let (stage, step) = (f.next(), f.next().and_then(|s| s.parse::<u32>().ok()));
                stage == Some("text")
                    || (stage == Some("flamingo") && step.is_some_and(|s| s < first))
            });
            let (header, body) = csv.split_once('\n').unwrap_or((&csv, ""));
            let mut merged = format!("{header}\n");
            for line in keep {
                merged.push_str(line);
                merged.push('\n');
            }
            merged.push_str(body);
            csv = merged;
        }
    }
    // The plot covers every row in the CSV, a resumed run's earlier ones too.
    let all_rows = parse_metrics(&csv, &groups);
    write("metrics.csv", csv)?;
    write(
        "plot.svg",
        native::plot_svg(&all_rows, &groups, trainer.clip().1),
    )?;
    println!(
        "outputs: {}/ (metrics.csv, plot.svg, samples/, checkpoint.safetensors)",
        args.run_dir.display()
    );
    println!(
        "final: loss={last_loss:.4} caption_accuracy={:.4} text_only_accuracy={text_only:.4} steps={} seconds={:.1} clipped_share={:.3} adapter={adapter}",
        eval.accuracy,
        trainer.steps_done(),
        started.elapsed().as_secs_f64(),
        if n > 0 { f64::from(clipped_steps) / f64::from(n) } else { f64::NAN },
    );
    Ok(())
}
