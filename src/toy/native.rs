//! Native-only helpers: opening the adapter the environment asks for, and
//! writing checkpoints, images, plots, metrics and dataset dumps. Nothing
//! in the trainer depends on this module, so the browser build leaves it
//! out.

use super::ToyError;

/// Opens the adapter chosen by `WGPU_BACKEND` / `WGPU_ADAPTER_NAME` (or the
/// default one) with WebGPU's default limits, and subgroups where the
/// adapter has them (see [`super::kernels::Kernels::new`]), and returns its
/// device, queue and a one-line description.
///
/// Fails with [`ToyError::Device`] when no adapter is found; on a machine
/// without a GPU, `apt-get install mesa-vulkan-drivers` provides one.
pub async fn open_device() -> Result<(wgpu::Device, wgpu::Queue, String), ToyError> {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter = wgpu::util::initialize_adapter_from_env_or_default(&instance, None)
        .await
        .map_err(|e| {
            ToyError::Device(format!(
                "no GPU adapter found ({e}); install a driver, e.g. `apt-get install \
                 mesa-vulkan-drivers` for the CPU Vulkan driver, or check WGPU_BACKEND / \
                 WGPU_ADAPTER_NAME"
            ))
        })?;
    let info = adapter.get_info();
    let name = format!("{} ({:?})", info.name, info.backend);
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("wgpu_gradclip.toy"),
            required_features: adapter.features() & wgpu::Features::SUBGROUP,
            required_limits: wgpu::Limits::default(),
            ..Default::default()
        })
        .await
        .map_err(|e| ToyError::Device(format!("{name}: {e}")))?;
    log::info!("wgpu_gradclip.toy: adapter {name}");
    Ok((device, queue, name))
}

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use super::{Stage, Trainer};

fn io_err(path: &Path, e: impl std::fmt::Display) -> ToyError {
    ToyError::Checkpoint(format!("{}: {e}", path.display()))
}

/// A checkpoint as read from disk: named tensors (f32, PyTorch layout)
/// and string metadata.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// (name, shape, values).
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// `stage`, `step`, `seed` and the run's settings.
    pub metadata: HashMap<String, String>,
}

const OPT_M: &str = "optimizer.exp_avg";
const OPT_V: &str = "optimizer.exp_avg_sq";

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<u8>, safetensors::Dtype)],
    metadata: HashMap<String, String>,
) -> Result<(), ToyError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_err(path, e))?;
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes, dtype)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| io_err(path, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Write then rename, so an interrupted run never leaves half a file.
    let tmp = path.with_extension("tmp");
    safetensors::serialize_to_file(views, Some(metadata), &tmp).map_err(|e| io_err(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    bytemuck::cast_slice(values).to_vec()
}

/// Writes every parameter under its OpenFlamingo module path (PyTorch
/// [out, in] layout), AdamW's state as `optimizer.exp_avg` and
/// `optimizer.exp_avg_sq` (flat, over the trainable range) when
/// `with_optimizer`, and `extra` metadata plus the stage and step.
pub async fn save_checkpoint(
    trainer: &Trainer,
    path: &Path,
    with_optimizer: bool,
    extra: &[(&str, String)],
) -> Result<(), ToyError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = trainer
        .read_params()
        .await?
        .into_iter()
        .map(|(name, shape, values)| (name, shape, f32_bytes(&values), safetensors::Dtype::F32))
        .collect();
    if with_optimizer {
        let (m, v) = trainer.read_optimizer().await?;
        tensors.push((
            OPT_M.into(),
            vec![m.len()],
            f32_bytes(&m),
            safetensors::Dtype::F32,
        ));
        tensors.push((
            OPT_V.into(),
            vec![v.len()],
            f32_bytes(&v),
            safetensors::Dtype::F32,
        ));
    }
    let mut metadata: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let stage = match trainer.stage() {
        Stage::Text => "text",
        Stage::Flamingo => "flamingo",
    };
    metadata.insert("stage".into(), stage.into());
    metadata.insert("step".into(), trainer.steps_done().to_string());
    metadata.insert("format".into(), "wgpu-gradclip toy v1".into());
    write_safetensors(path, &tensors, metadata)
}

/// Reads a safetensors file of f32 tensors.
pub fn load_checkpoint(path: &Path) -> Result<Checkpoint, ToyError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| io_err(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| io_err(path, e))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            continue;
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push((name, view.shape().to_vec(), values));
    }
    Ok(Checkpoint {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

impl Checkpoint {
    fn get(&self, name: &str) -> Option<&Vec<f32>> {
        self.tensors.iter().find(|t| t.0 == name).map(|t| &t.2)
    }

    /// Whether it holds the named tensor.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Loads every model tensor it holds into `trainer` (names it does not
    /// know are an error). With `resume`, also AdamW's state, the stage and
    /// the step, so training continues where it stopped.
    pub fn apply(&self, trainer: &mut Trainer, resume: bool) -> Result<usize, ToyError> {
        let model: Vec<(String, Vec<f32>)> = self
            .tensors
            .iter()
            .filter(|t| !t.0.starts_with("optimizer."))
            .map(|t| (t.0.clone(), t.2.clone()))
            .collect();
        trainer.write_params(&model)?;
        if resume {
            let stage = match self.metadata.get("stage").map(String::as_str) {
                Some("text") => Stage::Text,
                Some("flamingo") => Stage::Flamingo,
                other => return Err(ToyError::Checkpoint(format!("unknown stage {other:?}"))),
            };
            let step = self
                .metadata
                .get("step")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ToyError::Checkpoint("no step in metadata".into()))?;
            let (m, v) = match (self.get(OPT_M), self.get(OPT_V)) {
                (Some(m), Some(v)) => (m, v),
                _ => {
                    return Err(ToyError::Checkpoint(
                        "no optimizer state to resume from".into(),
                    ))
                }
            };
            trainer.write_optimizer(stage, step, m, v)?;
        }
        Ok(model.len())
    }
}

/// Writes RGBA pixels as a PNG, each pixel drawn `scale` x `scale`.
/// Fails with [`ToyError::Checkpoint`] when `rgba` does not hold
/// `size * size` pixels or the file cannot be written.
pub fn write_png(path: &Path, rgba: &[u8], size: u32, scale: u32) -> Result<(), ToyError> {
    if rgba.len() != (size * size * 4) as usize || scale == 0 {
        return Err(io_err(
            path,
            format!("expected {size}x{size} RGBA pixels and scale > 0"),
        ));
    }
    let out = size * scale;
    let mut big = Vec::with_capacity((out * out * 4) as usize);
    for y in 0..out {
        for x in 0..out {
            let i = (((y / scale) * size + x / scale) * 4) as usize;
            big.extend_from_slice(&rgba[i..i + 4]);
        }
    }
    let file = std::fs::File::create(path).map_err(|e| io_err(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), out, out);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(|e| io_err(path, e))?;
    writer.write_image_data(&big).map_err(|e| io_err(path, e))
}

/// One row of `metrics.csv`.
#[derive(Clone, Debug)]
pub struct MetricRow {
    /// `text` or `flamingo`.
    pub stage: &'static str,
    /// Step within the stage.
    pub step: u32,
    /// Batch loss.
    pub loss: f32,
    /// Learning rate.
    pub lr: f32,
    /// Per clip group: norm before clipping and coefficient (empty for text).
    pub groups: Vec<(String, f64, f32)>,
    /// Seconds since the run started.
    pub seconds: f64,
}

/// The CSV text of `rows`: stage, step, loss, lr, then `<group>_norm` and
/// `<group>_coefficient` for each of `groups`, then wall time.
pub fn metrics_csv(rows: &[MetricRow], groups: &[String]) -> String {
    let mut out = String::from("stage,step,loss,lr");
    for g in groups {
        let _ = write!(out, ",{g}_norm,{g}_coefficient");
    }
    out.push_str(",wall_seconds\n");
    for r in rows {
        let _ = write!(out, "{},{},{},{}", r.stage, r.step, r.loss, r.lr);
        for g in groups {
            match r.groups.iter().find(|x| &x.0 == g) {
                Some((_, n, c)) => {
                    let _ = write!(out, ",{n},{c}");
                }
                None => out.push_str(",,"),
            }
        }
        let _ = writeln!(out, ",{:.3}", r.seconds);
    }
    out
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Steps to label on the x axis: multiples of a round spacing (1, 2 or 5
/// times a power of ten) giving about five intervals up to `max_step`.
fn step_ticks(max_step: f64) -> Vec<u32> {
    let raw = (max_step / 5.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let spacing = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude)
        .max(1.0);
    (0..)
        .map(|i| (f64::from(i) * spacing).round())
        .take_while(|&s| s <= max_step)
        .map(|s| s as u32)
        .collect()
}

/// An SVG with two panels over the Flamingo-stage steps: the loss, and
/// each clip group's pre-clip gradient norm (log scale) against the
/// max_norm line, with axes, ticks and a legend.
pub fn plot_svg(rows: &[MetricRow], groups: &[String], max_norm: f32) -> String {
    let rows: Vec<&MetricRow> = rows.iter().filter(|r| r.stage == "flamingo").collect();
    let (w, h, left, right, top, gap, panel) = (900.0, 640.0, 70.0, 230.0, 40.0, 60.0, 240.0);
    let pw = w - left - right;
    let max_step = rows.iter().map(|r| r.step).max().unwrap_or(1).max(1) as f64;
    let x = |s: u32| left + pw * f64::from(s) / max_step;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let axes = |svg: &mut String, y0: f64, title: &str, ticks: &[(f64, String)]| {
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{y0}\" width=\"{pw}\" height=\"{panel}\" fill=\"none\" stroke=\"#444\"/>\n\
             <text x=\"{left}\" y=\"{}\" font-size=\"14\">{title}</text>",
            y0 - 8.0
        );
        for (py, label) in ticks {
            let _ = writeln!(
                svg,
                "<line x1=\"{}\" y1=\"{py}\" x2=\"{left}\" y2=\"{py}\" stroke=\"#444\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{label}</text>",
                left - 5.0,
                left - 8.0,
                py + 4.0
            );
        }
        for s in step_ticks(max_step) {
            let px = x(s);
            let _ = writeln!(
                svg,
                "<line x1=\"{px}\" y1=\"{}\" x2=\"{px}\" y2=\"{}\" stroke=\"#444\"/>\
                 <text x=\"{px}\" y=\"{}\" text-anchor=\"middle\">{s}</text>",
                y0 + panel,
                y0 + panel + 5.0,
                y0 + panel + 18.0
            );
        }
    };
    let polyline = |points: &[(f64, f64)], colour: &str| {
        let pts: Vec<String> = points
            .iter()
            .map(|(a, b)| format!("{a:.1},{b:.1}"))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.2\" points=\"{}\"/>\n",
            pts.join(" ")
        )
    };

    // Loss panel, linear scale from 0.
    let max_loss = rows
        .iter()
        .map(|r| f64::from(r.loss))
        .fold(0.0, f64::max)
        .max(1e-3);
    let ly = |l: f64| top + panel * (1.0 - l / max_loss);
    let ticks: Vec<(f64, String)> = (0..=4)
        .map(|i| {
            let v = max_loss * f64::from(i) / 4.0;
            (ly(v), format!("{v:.2}"))
        })
        .collect();
    axes(&mut svg, top, "training loss (Flamingo stage)", &ticks);
    svg.push_str(&polyline(
        &rows
            .iter()
            .map(|r| (x(r.step), ly(f64::from(r.loss))))
            .collect::<Vec<_>>(),
        "#222",
    ));

    // Norm panel, log scale.
    let y0 = top + panel + gap;
    let norms = rows
        .iter()
        .flat_map(|r| r.groups.iter().map(|g| g.1))
        .filter(|n| *n > 0.0);
    let (mut lo, mut hi) = (f64::from(max_norm), f64::from(max_norm));
    for n in norms {
        lo = lo.min(n);
        hi = hi.max(n);
    }
    let (llo, lhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let ny = |n: f64| y0 + panel * (1.0 - (n.max(lo).log10() - llo) / (lhi - llo));
    let ticks: Vec<(f64, String)> = (llo as i32..=lhi as i32)
        .map(|e| (ny(10f64.powi(e)), format!("1e{e}")))
        .collect();
    axes(
        &mut svg,
        y0,
        "pre-clip gradient norm per clip group (log scale)",
        &ticks,
    );
    for (gi, g) in groups.iter().enumerate() {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter_map(|r| {
                r.groups
                    .iter()
                    .find(|e| &e.0 == g)
                    .filter(|e| e.1 > 0.0)
                    .map(|e| (x(r.step), ny(e.1)))
            })
            .collect();
        svg.push_str(&polyline(&pts, COLOURS[gi % COLOURS.len()]));
    }
    let my = ny(f64::from(max_norm));
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{my}\" x2=\"{}\" y2=\"{my}\" stroke=\"black\" stroke-dasharray=\"6 4\"/>",
        left + pw
    );
    let lx = left + pw + 15.0;
    let mut ly2 = y0 + 10.0;
    let _ = writeln!(
        svg,
        "<line x1=\"{lx}\" y1=\"{ly2}\" x2=\"{}\" y2=\"{ly2}\" stroke=\"black\" stroke-dasharray=\"6 4\"/>\
         <text x=\"{}\" y=\"{}\">max_norm = {max_norm}</text>",
        lx + 25.0,
        lx + 30.0,
        ly2 + 4.0
    );
    for (gi, g) in groups.iter().enumerate() {
        ly2 += 18.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{lx}\" y1=\"{ly2}\" x2=\"{}\" y2=\"{ly2}\" stroke=\"{}\" stroke-width=\"2\"/>\
             <text x=\"{}\" y=\"{}\">{g}</text>",
            lx + 25.0,
            COLOURS[gi % COLOURS.len()],
            lx + 30.0,
            ly2 + 4.0
        );
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>",
        left + pw / 2.0,
        h - 8.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// Writes the generated data of a run as safetensors, so that others can
/// reproduce it bit for bit: both image pools (`[n, 3, 32, 32]` f32 in
/// [0, 1]) with their labels (`[n, 3]` i32: colour, shape, place), and for
/// each of `steps` Flamingo steps the batch's token ids, targets (-100
/// where ignored, as PyTorch) and the pool index of each image slot.
pub fn dump_dataset(trainer: &Trainer, path: &Path, steps: u32) -> Result<(), ToyError> {
    let (train, held_out) = trainer.pools();
    let mut tensors = Vec::new();
    for (name, pool) in [("train", train), ("eval", held_out)] {
        let pixels: Vec<f32> = pool.pixels.iter().flatten().copied().collect();
        let n = pool.specs.len();
        let size = super::data::IMAGE_SIZE;
        tensors.push((
            format!("{name}_images"),
            vec![n, 3, size, size],
            f32_bytes(&pixels),
            safetensors::Dtype::F32,
        ));
        let labels: Vec<i32> = pool
            .specs
            .iter()
            .flat_map(|s| [i32::from(s.colour), i32::from(s.shape), i32::from(s.place)])
            .collect();
        tensors.push((
            format!("{name}_labels"),
            vec![n, 3],
            bytemuck::cast_slice(&labels).to_vec(),
            safetensors::Dtype::I32,
        ));
    }
    let (mut tokens, mut targets, mut slots) = (Vec::new(), Vec::new(), Vec::new());
    for step in 0..steps {
        let (t, g, s) = trainer.batch_tokens(step);
        tokens.extend(t.iter().map(|&x| x as i32));
        targets.extend(g.iter().map(|&x| {
            if x == super::kernels::NONE {
                -100
            } else {
                x as i32
            }
        }));
        slots.extend(s.iter().map(|&x| x as i32));
    }
    let c = trainer.config();
    let per = (c.batch * c.context) as usize;
    let n_slots = slots.len() / steps.max(1) as usize;
    tensors.push((
        "step_tokens".into(),
        vec![steps as usize, c.batch as usize, c.context as usize],
        bytemuck::cast_slice(&tokens).to_vec(),
        safetensors::Dtype::I32,
    ));
    tensors.push((
        "step_targets".into(),
        vec![steps as usize, c.batch as usize, c.context as usize],
        bytemuck::cast_slice(&targets).to_vec(),
        safetensors::Dtype::I32,
    ));
    tensors.push((
        "step_image_index".into(),
        vec![steps as usize, n_slots],
        bytemuck::cast_slice(&slots).to_vec(),
        safetensors::Dtype::I32,
    ));
    debug_assert_eq!(tokens.len(), steps as usize * per);
    let mut metadata = HashMap::new();
    metadata.insert("vocab".into(), super::data::VOCAB.join(" "));
    metadata.insert("seed".into(), c.seed.to_string());
    metadata.insert("layout".into(), "image slot k of step s holds pool image step_image_index[s, k]; sequences 0..batch/2 use slots 2b, 2b+1, the rest one slot each, in order".into());
    write_safetensors(path, &tensors, metadata)
}

#[cfg(test)]
mod tests {
    use super::step_ticks;

    #[test]
    fn step_ticks_are_round() {
        assert_eq!(step_ticks(2499.0), vec![0, 500, 1000, 1500, 2000]);
        assert_eq!(step_ticks(2500.0), vec![0, 500, 1000, 1500, 2000, 2500]);
        assert_eq!(step_ticks(39.0), vec![0, 10, 20, 30]);
        assert_eq!(step_ticks(12.0), vec![0, 5, 10]);
        assert_eq!(step_ticks(1.0), vec![0, 1]);
    }
}
