//! The page's trainer: the toy model's [`Trainer`] behind a small
//! JavaScript API. The language model is first pretrained on caption text,
//! then frozen for the Flamingo stage, whose gradients are clipped.

use std::cell::{Cell, RefCell};

use wasm_bindgen::prelude::*;
use wgpu_gradclip::toy::{ClipChoice, Stage, ToyConfig, Trainer};

use crate::gpu::{self, Gpu};

/// A named configuration the page can ask for with `?config=`.
fn config_named(name: &str) -> Result<ToyConfig, JsError> {
    match name {
        // The toy's defaults, sized for a laptop's integrated GPU, with a
        // quarter of the image pool, so the page starts sooner and keeps
        // 50 MB of pixels in wasm memory rather than 200 MB (natively,
        // setup took 5 s rather than 14 s on the CPU Vulkan driver). It
        // costs accuracy in long runs only: 94% rather than 98% held-out
        // after 2500 steps.
        "demo" => Ok(ToyConfig {
            train_images: 4096,
            ..ToyConfig::default()
        }),
        // A few seconds per dozen steps even on a software adapter; for
        // tests and for trying the page on a machine without a GPU.
        "tiny" => Ok(ToyConfig::tiny()),
        other => Err(JsError::new(&format!(
            "unknown config `{other}`; use `demo` or `tiny`"
        ))),
    }
}

fn set(obj: &js_sys::Object, key: &str, value: impl Into<JsValue>) {
    // Setting a property on a plain object cannot fail.
    let _ = js_sys::Reflect::set(obj, &key.into(), &value.into());
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Training state shared by the page's calls. Methods take `&self` so that
/// settings can change while a step is awaited; they take effect at the
/// next step.
#[wasm_bindgen]
pub struct Demo {
    gpu: Gpu,
    trainer: RefCell<Trainer>,
    pretrain_steps: u32,
    /// Steps of either stage so far: the x axis of the page's charts.
    steps: Cell<u32>,
    clip: Cell<ClipChoice>,
    max_norm: Cell<f32>,
}

#[wasm_bindgen]
impl Demo {
    /// Opens the WebGPU device and builds the model: generates the data,
    /// compiles the kernels and encodes every image once. Rejects with a
    /// message a person can read when WebGPU is missing or too small.
    pub async fn create(config: String) -> Result<Demo, JsError> {
        crate::console::init(log::LevelFilter::Info);
        let config = config_named(&config)?;
        let gpu = gpu::open(wgpu::Limits::default()).await.map_err(js_error)?;
        let trainer = Trainer::new(&gpu.device, &gpu.queue, config.clone())
            .await
            .map_err(js_error)?;
        log::info!(
            "wgpu_gradclip_web: model ready, {} clip dispatches per step",
            trainer.clip_dispatches()
        );
        Ok(Demo {
            gpu,
            trainer: RefCell::new(trainer),
            pretrain_steps: config.pretrain_steps,
            steps: Cell::new(0),
            clip: Cell::new(config.clip),
            max_norm: Cell::new(config.max_norm),
        })
    }

    /// The adapter's description, as the browser reports it.
    #[wasm_bindgen(js_name = adapterName)]
    pub fn adapter_name(&self) -> String {
        self.gpu.adapter_name()
    }

    /// The default max_norm of this configuration.
    #[wasm_bindgen(js_name = maxNorm)]
    pub fn max_norm(&self) -> f32 {
        self.max_norm.get()
    }

    /// Caption-text pretraining steps before the Flamingo stage starts.
    #[wasm_bindgen(js_name = pretrainSteps)]
    pub fn pretrain_steps(&self) -> u32 {
        self.pretrain_steps
    }

    /// Sets the clip mode from the next step on: `per-group`, `global` or
    /// `off` (norms are still measured).
    #[wasm_bindgen(js_name = setClipMode)]
    pub fn set_clip_mode(&self, mode: &str) -> Result<(), JsError> {
        let clip = ClipChoice::parse(mode)
            .ok_or_else(|| JsError::new(&format!("unknown clip mode `{mode}`")))?;
        self.clip.set(clip);
        Ok(())
    }

    /// Sets max_norm from the next step on; it must be finite and > 0.
    #[wasm_bindgen(js_name = setMaxNorm)]
    pub fn set_max_norm(&self, max_norm: f32) -> Result<(), JsError> {
        if !(max_norm.is_finite() && max_norm > 0.0) {
            return Err(JsError::new("max_norm must be a number greater than 0"));
        }
        self.max_norm.set(max_norm);
        Ok(())
    }

    /// Runs one training step and resolves to what it did:
    /// `{ step, stage, loss, lr, groupNames, groupNorms, coefficients,
    /// clipped, totalNorm }`. In the text stage the group arrays are empty.
    #[expect(
        clippy::await_holding_refcell_ref,
        reason = "the borrow is the guard against overlapping calls; they get an error from \
                  try_borrow_mut, not a panic"
    )]
    pub async fn step(&self) -> Result<JsValue, JsError> {
        let mut trainer = self
            .trainer
            .try_borrow_mut()
            .map_err(|_| JsError::new("a step or sample is already running"))?;
        let out = js_sys::Object::new();
        let step = self.steps.get();

        if trainer.stage() == Stage::Text && trainer.steps_done() < self.pretrain_steps {
            let loss = trainer.pretrain_step().await.map_err(js_error)?;
            set(&out, "stage", "text");
            set(&out, "loss", loss);
            set(&out, "groupNames", js_sys::Array::new());
            set(&out, "groupNorms", js_sys::Float64Array::new_with_length(0));
            set(
                &out,
                "coefficients",
                js_sys::Float32Array::new_with_length(0),
            );
            set(&out, "clipped", false);
        } else {
            if trainer.stage() == Stage::Text {
                trainer.begin_flamingo();
                log::info!("wgpu_gradclip_web: language model frozen, Flamingo stage begins");
            }
            let wanted = (self.clip.get(), self.max_norm.get());
            if trainer.clip() != wanted {
                trainer.set_clip(wanted.0, wanted.1).map_err(js_error)?;
            }
            let stats = trainer.step().await.map_err(js_error)?;
            let names: js_sys::Array = stats
                .groups
                .iter()
                .map(|g| JsValue::from(g.0.as_str()))
                .collect();
            let norms: Vec<f64> = stats.groups.iter().map(|g| g.1).collect();
            let coefficients: Vec<f32> = stats.groups.iter().map(|g| g.2).collect();
            set(&out, "stage", "flamingo");
            set(&out, "loss", stats.loss);
            set(&out, "lr", stats.lr);
            set(&out, "groupNames", names);
            set(
                &out,
                "groupNorms",
                js_sys::Float64Array::from(norms.as_slice()),
            );
            set(
                &out,
                "coefficients",
                js_sys::Float32Array::from(coefficients.as_slice()),
            );
            set(&out, "clipped", coefficients.iter().any(|&c| c != 1.0));
            set(&out, "totalNorm", stats.total_norm);
        }
        self.steps.set(step + 1);
        set(&out, "step", step + 1);
        Ok(out.into())
    }

    /// The first `n` held-out images with the captions the model generates
    /// now: `[{ width, height, rgba, caption, truth }]`.
    #[expect(
        clippy::await_holding_refcell_ref,
        reason = "as in `step`: a step that overlaps gets an error, not a panic"
    )]
    pub async fn samples(&self, n: usize) -> Result<js_sys::Array, JsError> {
        let trainer = self
            .trainer
            .try_borrow()
            .map_err(|_| JsError::new("a step is already running"))?;
        let samples = trainer.samples(n).await.map_err(js_error)?;
        Ok(samples
            .into_iter()
            .map(|s| {
                let o = js_sys::Object::new();
                set(&o, "width", s.size);
                set(&o, "height", s.size);
                set(&o, "rgba", js_sys::Uint8Array::from(s.rgba.as_slice()));
                set(&o, "caption", s.caption);
                set(&o, "truth", s.truth);
                JsValue::from(o)
            })
            .collect())
    }
}
