//! The trainer: owns the GPU state of one run and drives both stages,
//! clipping, evaluation and sampling. Every GPU wait is an `await`, so it
//! runs unchanged in a browser.

use super::data::{self, ImagePool, Rng, Sequence, CAPTION_LEN, END_OF_CHUNK, IMAGE, PAD};
use super::kernels::{Kernels, Memory, Program, NONE};
use super::model::{AdamHyper, Builder, Graphs, Model, Stage};
use super::{ToyConfig, ToyError};
use crate::{ClipConfig, ClipGroup, ClipMode, ClipPlan, GradClipper, GradView};

/// How the Flamingo stage clips gradients (`--clip-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClipChoice {
    /// OpenFlamingo's FSDP mode: `perceiver`, each
    /// `gated_cross_attn_layers.<i>` and `input_embeddings` clipped by their
    /// own norms.
    PerGroup,
    /// OpenFlamingo's DDP mode: one norm over every trainable parameter.
    Global,
    /// No clipping; the norms are still measured and reported.
    Off,
}

impl ClipChoice {
    /// Parses `per-group`, `global` or `off`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "per-group" => Some(Self::PerGroup),
            "global" => Some(Self::Global),
            "off" => Some(Self::Off),
            _ => None,
        }
    }

    /// The flag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerGroup => "per-group",
            Self::Global => "global",
            Self::Off => "off",
        }
    }
}

/// What one training step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// 0-based step index within the stage.
    pub step: u32,
    /// Mean cross-entropy over the batch's valid positions.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// Per clip group: name, norm before clipping, coefficient applied (1
    /// when not clipped). Empty in the text stage.
    pub groups: Vec<(String, f64, f32)>,
    /// Norm over every group together.
    pub total_norm: f64,
}

/// Held-out greedy decoding results.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalResult {
    /// Exact-match share over every decoded caption.
    pub accuracy: f32,
    /// ... over single-image prompts.
    pub single_accuracy: f32,
    /// ... over the second caption of two-image prompts (the first given).
    pub second_image_accuracy: f32,
    /// Captions decoded.
    pub total: u32,
}

/// A held-out image with the caption the model generates for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// 32 x 32 RGBA pixels, row-major.
    pub rgba: Vec<u8>,
    /// Image side in pixels.
    pub size: u32,
    /// Greedy-decoded caption.
    pub caption: String,
    /// The true caption.
    pub truth: String,
}

struct StagePrograms {
    graphs: Graphs,
    forward: Program,
    backward: Program,
    update: Program,
}

struct Eval {
    images: Vec<u32>,
    prefix: Vec<u32>,
    truth: [u32; CAPTION_LEN],
}

/// Owns one run: the model in a GPU arena, its programs, the data and the
/// clip plan. Create with [`Trainer::new`]; pretrain with
/// [`Trainer::pretrain_step`] (or load weights), call
/// [`Trainer::begin_flamingo`], then [`Trainer::step`].
pub struct Trainer {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Programs hold their own pipelines; this builds new ones for
    /// [`Trainer::profile`], which is native only.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    kernels: Kernels,
    memory: Memory,
    model: Model,
    config: ToyConfig,
    text: StagePrograms,
    flamingo: StagePrograms,
    clipper: GradClipper,
    plan: ClipPlan,
    readback: wgpu::Buffer,
    train: ImagePool,
    held_out: ImagePool,
    stage: Stage,
    step: u32,
    pretrain_step: u32,
}

const ADAM: AdamHyper = AdamHyper {
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.0,
};
/// Images per vision-encoder pass when the features are cached.
const VISION_CHUNK: u32 = 128;

impl Trainer {
    /// Builds everything for `config` on `device`: generates the data,
    /// initialises the weights from the seed, compiles the kernels, and runs
    /// the frozen vision encoder once over every image (its features do not
    /// change, so they are cached).
    ///
    /// Errors: [`ToyError::Config`] for bad settings, [`ToyError::Device`]
    /// when the device is too small, [`ToyError::Clip`] if the clip plan is
    /// refused.
    pub async fn new(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        config: ToyConfig,
    ) -> Result<Self, ToyError> {
        let model = Model::new(&config)?;
        let kernels = Kernels::new(device).await?;
        let hyper = AdamHyper {
            weight_decay: config.weight_decay,
            ..ADAM
        };
        let base = model.alloc.next;
        let (text, text_end) = Builder::new(&model, base).stage(Stage::Text, &hyper);
        let (flamingo, flamingo_end) = Builder::new(&model, base).stage(Stage::Flamingo, &hyper);
        let d = model.dims;
        // The frozen vision encoder runs once per image; one program per
        // chunk of images, each writing its features straight into the cache.
        let n_images = config.train_images + config.eval_images;
        let mut vision_programs = Vec::new();
        let mut vision_end = base;
        let mut patches = 0;
        for first in (0..n_images).step_by(VISION_CHUNK as usize) {
            let mut vb = Builder::new(&model, base);
            patches = vb.alloc.take(VISION_CHUNK * d.p * d.pd);
            let count = VISION_CHUNK.min(n_images - first);
            vb.vision_forward(patches, count, model.feats + first * d.p * d.d);
            vision_end = vision_end.max(vb.alloc.next);
            vision_programs.push(vb.ops);
        }
        let end = text_end.max(flamingo_end).max(vision_end);
        let memory = Memory::new(&kernels, u64::from(end), u64::from(model.ints.total))?;

        let mut rng = Rng::stream(config.seed, 1, 0);
        let train = ImagePool::generate(config.train_images as usize, &mut rng);
        let mut rng = Rng::stream(config.seed, 1, 1);
        let held_out = ImagePool::generate(config.eval_images as usize, &mut rng);

        let params = model.init_params(config.seed);
        queue.write_buffer(&memory.mem, 0, bytemuck::cast_slice(&params));

        let all: Vec<&Vec<f32>> = train.pixels.iter().chain(&held_out.pixels).collect();
        for (images, ops) in all.chunks(VISION_CHUNK as usize).zip(&vision_programs) {
            let table: Vec<f32> = images
                .iter()
                .flat_map(|img| data::patchify(img, config.patch as usize))
                .collect();
            queue.write_buffer(
                &memory.mem,
                u64::from(patches) * 4,
                bytemuck::cast_slice(&table),
            );
            let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("wgpu_gradclip.toy.vision"),
            });
            Program::new(&kernels, ops).record(&memory, &mut encoder);
            queue.submit([encoder.finish()]);
        }

        let program = |g: &Graphs| StagePrograms {
            forward: Program::new(&kernels, &g.forward),
            backward: Program::new(&kernels, &g.backward),
            update: Program::new(&kernels, &g.update),
            graphs: Graphs {
                forward: g.forward.clone(),
                backward: g.backward.clone(),
                update: g.update.clone(),
                logits: g.logits,
                loss_rows: g.loss_rows,
            },
        };
        let text = program(&text);
        let flamingo = program(&flamingo);
        let clipper = GradClipper::new(device)?;
        let plan = make_plan(&clipper, &model, &memory, config.clip, config.max_norm)?;
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.toy.readback"),
            size: u64::from(d.m * d.v.max(1)) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        log::info!(
            "wgpu_gradclip.toy: {} parameters, {} trainable in the Flamingo stage, arena {} MiB, \
             {} + {} + {} dispatches per Flamingo step",
            model.params.iter().map(|p| p.len()).sum::<u32>(),
            model.trainable_count(Stage::Flamingo),
            (u64::from(end) * 4) >> 20,
            flamingo.forward.len(),
            flamingo.backward.len(),
            flamingo.update.len(),
        );
        Ok(Self {
            device: device.clone(),
            queue: queue.clone(),
            kernels,
            memory,
            model,
            config,
            text,
            flamingo,
            clipper,
            plan,
            readback,
            train,
            held_out,
            stage: Stage::Text,
            step: 0,
            pretrain_step: 0,
        })
    }

    /// The configuration of this run.
    pub fn config(&self) -> &ToyConfig {
        &self.config
    }

    /// The model layout: parameter names, shapes and offsets.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The stage that [`Trainer::step`] / [`Trainer::pretrain_step`] run.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Steps taken in the current stage.
    pub fn steps_done(&self) -> u32 {
        match self.stage {
            Stage::Text => self.pretrain_step,
            Stage::Flamingo => self.step,
        }
    }

    /// Dispatches per Flamingo training step (forward, backward, update),
    /// not counting the clip.
    pub fn dispatch_counts(&self) -> [usize; 3] {
        [
            self.flamingo.forward.len(),
            self.flamingo.backward.len(),
            self.flamingo.update.len(),
        ]
    }

    /// Dispatches the clip adds to each step.
    pub fn clip_dispatches(&self) -> usize {
        self.plan.dispatch_count()
    }

    /// Clip group names, in the order [`StepStats::groups`] reports them.
    pub fn step_group_names(&self) -> Vec<String> {
        self.plan.group_names().to_vec()
    }

    /// The current clip mode and max_norm.
    pub fn clip(&self) -> (ClipChoice, f32) {
        (self.config.clip, self.config.max_norm)
    }

    /// Changes the clip mode and max_norm from the next step on. Fails with
    /// [`ToyError::Clip`] for a max_norm that is not finite and positive
    /// (the previous setting stays).
    pub fn set_clip(&mut self, clip: ClipChoice, max_norm: f32) -> Result<(), ToyError> {
        self.plan = make_plan(&self.clipper, &self.model, &self.memory, clip, max_norm)?;
        self.config.clip = clip;
        self.config.max_norm = max_norm;
        Ok(())
    }

    /// Freezes the language model and starts the Flamingo stage: from now
    /// on [`Trainer::step`] trains the Perceiver, the gated cross-attention
    /// and the two special embedding rows. Resets AdamW's state.
    pub fn begin_flamingo(&mut self) {
        let mut encoder = self.encoder("wgpu_gradclip.toy.begin_flamingo");
        let len = u64::from(self.model.params_end - self.model.lm_start) * 4;
        encoder.clear_buffer(
            &self.memory.mem,
            u64::from(self.model.adam_m) * 4,
            Some(len),
        );
        encoder.clear_buffer(
            &self.memory.mem,
            u64::from(self.model.adam_v) * 4,
            Some(len),
        );
        self.queue.submit([encoder.finish()]);
        self.stage = Stage::Flamingo;
        self.step = 0;
    }

    fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// One step of caption-text pretraining of the language model (lr warms
    /// up over the first tenth of the steps). Returns the batch loss.
    pub async fn pretrain_step(&mut self) -> Result<f32, ToyError> {
        if self.stage != Stage::Text {
            return Err(ToyError::Stage(
                "pretraining is over; the language model is frozen".into(),
            ));
        }
        let step = self.pretrain_step;
        let warmup = (self.config.pretrain_steps / 10).max(1);
        let lr = self.config.pretrain_lr * (step as f32 / warmup as f32).min(1.0);
        let batch = self.training_batch(Stage::Text, step);
        self.write_batch(&batch, lr, step + 1);
        let mut encoder = self.encoder("wgpu_gradclip.toy.pretrain_step");
        let p = &self.text;
        p.forward.record(&self.memory, &mut encoder);
        p.backward.record(&self.memory, &mut encoder);
        p.update.record(&self.memory, &mut encoder);
        self.copy_out(&mut encoder, p.graphs.loss_rows, self.model.dims.m);
        self.queue.submit([encoder.finish()]);
        let rows = self.read(self.model.dims.m).await?;
        self.pretrain_step += 1;
        Ok(rows.iter().sum::<f32>() / batch.valid.max(1) as f32)
    }

    /// One Flamingo-stage step: forward, backward, clip (through
    /// [`ClipPlan`]), AdamW. Returns the loss and what the clip saw.
    pub async fn step(&mut self) -> Result<StepStats, ToyError> {
        if self.stage != Stage::Flamingo {
            return Err(ToyError::Stage("call begin_flamingo first".into()));
        }
        let step = self.step;
        let warmup = self.config.warmup.max(1);
        // Linear warmup from lr 0 at the first step, then constant.
        let lr = self.config.lr * (step as f32 / warmup as f32).min(1.0);
        let batch = self.training_batch(Stage::Flamingo, step);
        self.write_batch(&batch, lr, step + 1);
        let mut encoder = self.encoder("wgpu_gradclip.toy.step");
        let p = &self.flamingo;
        p.forward.record(&self.memory, &mut encoder);
        p.backward.record(&self.memory, &mut encoder);
        self.plan.record(&mut encoder);
        self.plan.record_report(&mut encoder)?;
        p.update.record(&self.memory, &mut encoder);
        self.copy_out(&mut encoder, p.graphs.loss_rows, self.model.dims.m);
        self.queue.submit([encoder.finish()]);
        let report = self.plan.read_report().await?;
        let rows = self.read(self.model.dims.m).await?;
        self.step += 1;
        let off = self.config.clip == ClipChoice::Off;
        Ok(StepStats {
            step,
            loss: rows.iter().sum::<f32>() / batch.valid.max(1) as f32,
            lr,
            groups: report
                .groups
                .iter()
                .map(|g| {
                    (
                        g.name.clone(),
                        g.norm,
                        if off { 1.0 } else { g.coefficient },
                    )
                })
                .collect(),
            total_norm: report.total_norm,
        })
    }

    fn copy_out(&self, encoder: &mut wgpu::CommandEncoder, off: u32, len: u32) {
        encoder.copy_buffer_to_buffer(
            &self.memory.mem,
            u64::from(off) * 4,
            &self.readback,
            0,
            u64::from(len) * 4,
        );
    }

    async fn read(&self, len: u32) -> Result<Vec<f32>, ToyError> {
        read_f32(&self.device, &self.readback, 0, len).await
    }

    /// The batch of `step`: half the sequences hold two images, half one,
    /// so every image slot is used; drawn from a stream seeded by (seed,
    /// stage, step), so a resumed run sees the same batches.
    fn training_batch(&self, stage: Stage, step: u32) -> Batch {
        let d = self.model.dims;
        let mut rng = Rng::stream(self.config.seed, 2 + stage as u64, u64::from(step));
        let n = self.train.specs.len() as u32;
        let mut seqs = Vec::new();
        for b in 0..d.b {
            let count = if b < d.b / 2 { 2 } else { 1 };
            let images: Vec<u32> = (0..count).map(|_| rng.below(n)).collect();
            seqs.push(data::sequence(&self.train, &images));
        }
        Batch::new(&self.model, &seqs, &vec![0; seqs.len()], stage, None)
    }

    fn write_batch(&self, batch: &Batch, lr: f32, t: u32) {
        let mut words = batch.words.clone();
        let ints = self.model.ints;
        let (b1, b2) = (ADAM.beta1, ADAM.beta2);
        words[ints.step as usize] = lr.to_bits();
        words[ints.step as usize + 1] = (1.0 - b1.powi(t as i32)).to_bits();
        words[ints.step as usize + 2] = (1.0 - b2.powi(t as i32)).to_bits();
        self.queue
            .write_buffer(&self.memory.ints, 0, bytemuck::cast_slice(&words));
    }

    fn eval_set(&self) -> Vec<Eval> {
        let n = self.held_out.specs.len() as u32;
        let mut out = Vec::new();
        for i in 0..n {
            out.push(Eval {
                images: vec![i],
                prefix: vec![IMAGE],
                truth: self.held_out.specs[i as usize].caption(),
            });
        }
        for i in 0..n / 2 {
            let j = (i * 7 + 3) % n;
            let seq = data::sequence(&self.held_out, &[i]);
            let mut prefix = seq.tokens[..seq.tokens.len() - 1].to_vec();
            prefix.push(IMAGE);
            out.push(Eval {
                images: vec![i, j],
                prefix,
                truth: self.held_out.specs[j as usize].caption(),
            });
        }
        out
    }

    /// Greedy-decodes every eval prompt; returns the generated caption ids.
    async fn decode(&self, items: &[Eval]) -> Result<Vec<Vec<u32>>, ToyError> {
        let d = self.model.dims;
        let mut results = Vec::with_capacity(items.len());
        let mut start = 0;
        while start < items.len() {
            // Fill a batch: at most b sequences and s image slots.
            let mut end = start;
            let mut slots = 0;
            while end < items.len()
                && end - start < d.b as usize
                && slots + items[end].images.len() <= d.s as usize
            {
                slots += items[end].images.len();
                end += 1;
            }
            let chunk = &items[start..end];
            let mut seqs: Vec<Sequence> = chunk
                .iter()
                .map(|e| Sequence {
                    tokens: e.prefix.clone(),
                    images: e.images.clone(),
                })
                .collect();
            let mut done = vec![false; seqs.len()];
            let prefix_lens: Vec<usize> = seqs.iter().map(|s| s.tokens.len()).collect();
            for _ in 0..=CAPTION_LEN {
                let batch = Batch::new(
                    &self.model,
                    &seqs,
                    &prefix_lens,
                    Stage::Flamingo,
                    Some(self.train.specs.len() as u32),
                );
                self.write_batch(&batch, 0.0, 1);
                let mut encoder = self.encoder("wgpu_gradclip.toy.decode");
                self.flamingo.forward.record(&self.memory, &mut encoder);
                self.copy_out(&mut encoder, self.flamingo.graphs.logits, d.m * d.v);
                self.queue.submit([encoder.finish()]);
                let logits = self.read(d.m * d.v).await?;
                for (b, seq) in seqs.iter_mut().enumerate() {
                    if done[b] {
                        continue;
                    }
                    let row = b * d.t as usize + seq.tokens.len() - 1;
                    let l = &logits[row * d.v as usize..(row + 1) * d.v as usize];
                    let next = argmax(l);
                    seq.tokens.push(next);
                    if next == END_OF_CHUNK || seq.tokens.len() >= d.t as usize {
                        done[b] = true;
                    }
                }
                if done.iter().all(|&x| x) {
                    break;
                }
            }
            for (seq, &p) in seqs.iter().zip(&prefix_lens) {
                results.push(seq.tokens[p..].to_vec());
            }
            start = end;
        }
        Ok(results)
    }

    /// Greedy caption exact match on the held-out images: every image as a
    /// single-image prompt, plus two-image prompts whose second caption is
    /// decoded after the first is given (this exercises the media mask).
    /// Exact means the caption's six words, then `<|endofchunk|>`.
    pub async fn evaluate(&self) -> Result<EvalResult, ToyError> {
        let items = self.eval_set();
        let out = self.decode(&items).await?;
        let (mut single, mut n_single, mut second, mut n_second) = (0u32, 0u32, 0u32, 0u32);
        for (e, gen) in items.iter().zip(&out) {
            let ok = gen.len() == CAPTION_LEN + 1
                && gen[..CAPTION_LEN] == e.truth
                && gen[CAPTION_LEN] == END_OF_CHUNK;
            if e.images.len() == 1 {
                n_single += 1;
                single += u32::from(ok);
            } else {
                n_second += 1;
                second += u32::from(ok);
            }
        }
        let share = |a: u32, n: u32| if n == 0 { 0.0 } else { a as f32 / n as f32 };
        Ok(EvalResult {
            accuracy: share(single + second, n_single + n_second),
            single_accuracy: share(single, n_single),
            second_image_accuracy: share(second, n_second),
            total: n_single + n_second,
        })
    }

    /// The first `n` held-out images with their greedy captions.
    pub async fn samples(&self, n: usize) -> Result<Vec<Sample>, ToyError> {
        let items: Vec<Eval> = self
            .eval_set()
            .into_iter()
            .take(n.min(self.held_out.specs.len()))
            .collect();
        let out = self.decode(&items).await?;
        Ok(items
            .iter()
            .zip(out)
            .map(|(e, gen)| {
                let words: Vec<u32> = gen.into_iter().take_while(|&t| t != END_OF_CHUNK).collect();
                Sample {
                    rgba: data::to_rgba(&self.held_out.pixels[e.images[0] as usize]),
                    size: data::IMAGE_SIZE as u32,
                    caption: data::detokenize(&words),
                    truth: data::detokenize(&e.truth),
                }
            })
            .collect())
    }

    /// Reads `len` floats of the arena from element `off`.
    pub async fn read_arena(&self, off: u32, len: u32) -> Result<Vec<f32>, ToyError> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("wgpu_gradclip.toy.read_arena"),
            size: (u64::from(len.max(1)) * 4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.encoder("wgpu_gradclip.toy.read_arena");
        encoder.copy_buffer_to_buffer(
            &self.memory.mem,
            u64::from(off) * 4,
            &staging,
            0,
            u64::from(len) * 4,
        );
        self.queue.submit([encoder.finish()]);
        read_f32(&self.device, &staging, 0, len).await
    }

    /// Every parameter tensor, by name, in [`Model::params`] order.
    pub async fn read_params(&self) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>, ToyError> {
        let all = self.read_arena(0, self.model.params_end).await?;
        Ok(self
            .model
            .params
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.shape.clone(),
                    all[p.off as usize..(p.off + p.len()) as usize].to_vec(),
                )
            })
            .collect())
    }

    /// Overwrites the named tensors; unknown names or wrong sizes are an
    /// error and nothing is written then.
    pub fn write_params(&mut self, tensors: &[(String, Vec<f32>)]) -> Result<(), ToyError> {
        let mut writes = Vec::new();
        for (name, values) in tensors {
            let p = self
                .model
                .params
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| ToyError::Checkpoint(format!("unknown tensor {name}")))?;
            if values.len() != p.len() as usize {
                return Err(ToyError::Checkpoint(format!(
                    "{name}: expected {} values, got {}",
                    p.len(),
                    values.len()
                )));
            }
            writes.push((p.off, values));
        }
        for (off, values) in writes {
            self.queue.write_buffer(
                &self.memory.mem,
                u64::from(off) * 4,
                bytemuck::cast_slice(values),
            );
        }
        Ok(())
    }

    /// AdamW's state of the current stage (first moments, second moments)
    /// and its step count, for checkpoints.
    pub async fn read_optimizer(&self) -> Result<(Vec<f32>, Vec<f32>), ToyError> {
        let n = self.model.params_end - self.model.lm_start;
        Ok((
            self.read_arena(self.model.adam_m, n).await?,
            self.read_arena(self.model.adam_v, n).await?,
        ))
    }

    /// Restores AdamW's state and the stage's step count (see
    /// [`Trainer::read_optimizer`]).
    pub fn write_optimizer(
        &mut self,
        stage: Stage,
        step: u32,
        m: &[f32],
        v: &[f32],
    ) -> Result<(), ToyError> {
        let n = (self.model.params_end - self.model.lm_start) as usize;
        if m.len() != n || v.len() != n {
            return Err(ToyError::Checkpoint(format!(
                "optimizer state must hold {n} values"
            )));
        }
        self.queue.write_buffer(
            &self.memory.mem,
            u64::from(self.model.adam_m) * 4,
            bytemuck::cast_slice(m),
        );
        self.queue.write_buffer(
            &self.memory.mem,
            u64::from(self.model.adam_v) * 4,
            bytemuck::cast_slice(v),
        );
        self.stage = stage;
        match stage {
            Stage::Text => self.pretrain_step = step,
            Stage::Flamingo => self.step = step,
        }
        Ok(())
    }

    /// The training batch of a Flamingo step as it is uploaded: token ids,
    /// targets (NONE where ignored) and the pool index of each image slot,
    /// for dataset dumps.
    pub fn batch_tokens(&self, step: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        let b = self.training_batch(Stage::Flamingo, step);
        let i = self.model.ints;
        let w = &b.words;
        (
            w[i.tok as usize..i.tgt as usize].to_vec(),
            w[i.tgt as usize..i.time as usize].to_vec(),
            w[i.feat as usize..i.valid as usize].to_vec(),
        )
    }

    /// The training and held-out image pools.
    pub fn pools(&self) -> (&ImagePool, &ImagePool) {
        (&self.train, &self.held_out)
    }

    /// Reads an f32 view of the gradient arena for parameter `name` (tests).
    pub async fn read_grad(&self, name: &str) -> Result<Vec<f32>, ToyError> {
        let p = self.param(name)?;
        self.read_arena(self.model.grad(p.off), p.len()).await
    }

    fn param(&self, name: &str) -> Result<&super::ParamInfo, ToyError> {
        self.model
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ToyError::Checkpoint(format!("unknown tensor {name}")))
    }

    /// Runs the Flamingo forward and backward on the batch of `step`
    /// without clipping or updating, and returns the loss (gradients are
    /// left in the arena; see [`Trainer::read_grad`]). For gradient checks.
    pub async fn loss_and_grads(&self, step: u32) -> Result<f32, ToyError> {
        let batch = self.training_batch(Stage::Flamingo, step);
        self.write_batch(&batch, 0.0, 1);
        let mut encoder = self.encoder("wgpu_gradclip.toy.loss_and_grads");
        self.flamingo.forward.record(&self.memory, &mut encoder);
        self.flamingo.backward.record(&self.memory, &mut encoder);
        self.copy_out(
            &mut encoder,
            self.flamingo.graphs.loss_rows,
            self.model.dims.m,
        );
        self.queue.submit([encoder.finish()]);
        let rows = self.read(self.model.dims.m).await?;
        Ok(rows.iter().map(|&x| f64::from(x)).sum::<f64>() as f32 / batch.valid.max(1) as f32)
    }
}

/// One entry of [`Trainer::profile`].
#[derive(Clone, Debug)]
pub struct Timing {
    /// The kernel and its grid, or `Clip` and its dispatch count.
    pub name: String,
    /// Mean seconds per submission.
    pub seconds: f64,
    /// Multiply-adds of a matrix product, else 0.
    pub multiply_adds: u64,
}

impl Trainer {
    /// Times every dispatch of a Flamingo step on its own (submit and wait
    /// each), to find slow kernels, and last the clip as one submission
    /// (named `Clip`). Native only.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn profile(&self, reps: u32) -> Result<Vec<Timing>, ToyError> {
        let batch = self.training_batch(Stage::Flamingo, 0);
        self.write_batch(&batch, 0.0, 1);
        let g = &self.flamingo.graphs;
        let mut out = Vec::new();
        for d in g.forward.iter().chain(&g.backward) {
            let prog = Program::new(&self.kernels, std::slice::from_ref(d));
            let t = std::time::Instant::now();
            for _ in 0..reps {
                let mut encoder = self.encoder("wgpu_gradclip.toy.profile");
                prog.record(&self.memory, &mut encoder);
                self.queue.submit([encoder.finish()]);
                self.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| ToyError::Readback(e.to_string()))?;
            }
            out.push(Timing {
                name: format!("{:?} {:?}", d.kernel, d.grid),
                seconds: t.elapsed().as_secs_f64() / f64::from(reps),
                multiply_adds: d.multiply_adds(),
            });
        }
        // The clip as the step records it: norms, coefficients, scale.
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let mut encoder = self.encoder("wgpu_gradclip.toy.profile");
            self.plan.record(&mut encoder);
            self.queue.submit([encoder.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| ToyError::Readback(e.to_string()))?;
        }
        out.push(Timing {
            name: format!("Clip {} dispatches", self.plan.dispatch_count()),
            seconds: t.elapsed().as_secs_f64() / f64::from(reps),
            multiply_adds: 0,
        });
        Ok(out)
    }
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// The per-step integer data of one batch, laid out as [`IntsLayout`].
struct Batch {
    words: Vec<u32>,
    valid: u32,
}

impl Batch {
    /// `feat_base`: where the pool's features start (None: training pool).
    /// `prompt`: per sequence, positions before this get no target (0: all).
    fn new(
        model: &Model,
        seqs: &[Sequence],
        prompt: &[usize],
        stage: Stage,
        feat_base: Option<u32>,
    ) -> Self {
        let d = model.dims;
        let i = model.ints;
        let mut w = vec![0u32; i.total as usize];
        for s in 0..d.s {
            w[(i.feat + s) as usize] = feat_base.unwrap_or(0);
        }
        for k in 0..(d.b * d.ni) as usize {
            w[i.slot as usize + k] = NONE;
        }
        let mut slot = 0u32;
        let mut valid = 0;
        for (b, seq) in seqs.iter().enumerate() {
            let t = d.t as usize;
            let row = b * t;
            let len = seq.tokens.len().min(t);
            let mut images = 0;
            for (pos, &tok) in seq.tokens.iter().take(len).enumerate() {
                w[i.tok as usize + row + pos] = tok;
                if tok == IMAGE {
                    images += 1;
                }
                w[i.time as usize + row + pos] = images;
            }
            for pos in len..t {
                w[i.tok as usize + row + pos] = PAD;
                w[i.time as usize + row + pos] = images;
            }
            for pos in 0..t {
                let next = if pos + 1 < len {
                    seq.tokens[pos + 1]
                } else {
                    PAD
                };
                let ignored = next == PAD
                    || (stage == Stage::Flamingo && next == IMAGE)
                    || pos + 1 < prompt.get(b).copied().unwrap_or(0);
                w[i.tgt as usize + row + pos] = if ignored { NONE } else { next };
                valid += u32::from(!ignored);
            }
            w[i.len as usize + b] = len as u32;
            for (k, &img) in seq.images.iter().enumerate().take(d.ni as usize) {
                if slot < d.s {
                    w[(i.slot + b as u32 * d.ni) as usize + k] = slot;
                    w[(i.feat + slot) as usize] = feat_base.unwrap_or(0) + img;
                    slot += 1;
                }
            }
        }
        w[i.valid as usize] = valid;
        Self { words: w, valid }
    }
}

fn make_plan(
    clipper: &GradClipper,
    model: &Model,
    memory: &Memory,
    clip: ClipChoice,
    max_norm: f32,
) -> Result<ClipPlan, ToyError> {
    let mut names: Vec<String> = vec!["perceiver".into()];
    names.extend(
        model
            .xattn
            .iter()
            .map(|x| format!("gated_cross_attn_layers.{}", x.layer)),
    );
    names.push("input_embeddings".into());
    let groups: Vec<ClipGroup> = names
        .iter()
        .map(|name| {
            let views = model
                .params
                .iter()
                .filter(|p| p.group.as_deref() == Some(name.as_str()))
                .map(|p| {
                    GradView::new(
                        &memory.mem,
                        u64::from(model.grad(p.off)) * 4,
                        u64::from(p.len()),
                    )
                });
            ClipGroup::new(name.clone(), views)
        })
        .collect();
    let (mode, max_norm) = match clip {
        ClipChoice::PerGroup => (ClipMode::PerGroup, max_norm),
        ClipChoice::Global => (ClipMode::Global, max_norm),
        // Measure the norms through the same API; a coefficient of 1 writes nothing.
        ClipChoice::Off => (ClipMode::PerGroup, f32::MAX),
    };
    Ok(clipper.plan(&groups, &ClipConfig::new(max_norm).mode(mode))?)
}

/// Maps `len` floats of `buffer` from element `off` and copies them out. On
/// native this polls the device; in the browser it only awaits.
async fn read_f32(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    off: u32,
    len: u32,
) -> Result<Vec<f32>, ToyError> {
    let (tx, rx) = futures::channel::oneshot::channel();
    let slice = buffer.slice(u64::from(off) * 4..u64::from(off + len.max(1)) * 4);
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    #[cfg(not(target_arch = "wasm32"))]
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| ToyError::Readback(e.to_string()))?;
    #[cfg(target_arch = "wasm32")]
    let _ = device;
    rx.await
        .map_err(|_| ToyError::Readback("the map callback was dropped (device lost?)".into()))?
        .map_err(|e| ToyError::Readback(e.to_string()))?;
    let out = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| ToyError::Readback(e.to_string()))?;
        bytemuck::cast_slice::<u8, f32>(&view)[..len as usize].to_vec()
    };
    buffer.unmap();
    Ok(out)
}
