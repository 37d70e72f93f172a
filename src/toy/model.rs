//! The model's parameters (names, shapes, places in the arena, initial
//! values) and its computation as lists of dispatches: the frozen vision
//! encoder, the Perceiver resampler, the language model with gated
//! cross-attention blocks, the loss, the backward pass and AdamW.

use super::data::{Rng, END_OF_CHUNK, IMAGE};
use super::kernels::{
    AdamWParams, AttentionBackwardParams, AttentionMask, AttentionParams, CrossEntropyParams,
    Dispatch, EmbeddingBackwardParams, EmbeddingParams, Epilogue, GateBackwardParams,
    GatherRowsParams, LayerNormBackwardParams, LayerNormGradParams, LayerNormParams,
    LinearGradWeightParams, LinearParams, Prologue, RowMap, SumRowsParams, VisionEmbedParams,
    MAX_ATTENTION_LEN, MAX_HEAD_DIM, NONE,
};
use super::{linear_flags, ToyConfig, ToyError};

/// `LayerNorm(x)` into `ln_out` (with stats), then `y = ln_out W^T`: the
/// LayerNorm output is saved anyway for the backward pass.
#[allow(clippy::too_many_arguments)]
fn ln_linear(
    b: &mut Builder<'_>,
    rows: u32,
    k: u32,
    n: u32,
    x: RowMap,
    w_off: u32,
    y: RowMap,
    ln: Ln,
    stats: u32,
    ln_out: u32,
) -> LinearParams {
    b.layer_norm(rows, x, RowMap::dense(ln_out, k), stats, ln);
    LinearParams::new(rows, k, n, RowMap::dense(ln_out, k), w_off, y)
}

/// Which parameters a stage trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Caption-text pretraining of the language model (all its parameters).
    Text,
    /// The Flamingo stage: Perceiver, gated cross-attention, and the
    /// `<image>` / `<|endofchunk|>` embedding rows.
    Flamingo,
}

/// How a tensor starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Init {
    Normal(f32),
    Uniform(f32),
    Ones,
    Zeros,
}

/// One named parameter tensor in the arena.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// OpenFlamingo module path, e.g. `perceiver.layers.0.0.to_q.weight`.
    pub name: String,
    /// Element offset in the arena.
    pub off: u32,
    /// PyTorch shape ([out, in] for linear weights).
    pub shape: Vec<usize>,
    /// Clip group in the Flamingo stage, if trainable there.
    pub group: Option<String>,
    pub(crate) init: Init,
}

impl ParamInfo {
    /// Number of elements.
    pub fn len(&self) -> u32 {
        self.shape.iter().product::<usize>() as u32
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Bump allocator over the arena; every tensor starts at a multiple of 4
/// elements so that kernels may read it as `vec4`.
#[derive(Debug, Default)]
pub(crate) struct Alloc {
    pub next: u32,
}

impl Alloc {
    pub fn take(&mut self, n: u32) -> u32 {
        let off = self.next;
        self.next = (off + n).next_multiple_of(4);
        off
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ln {
    pub g: u32,
    pub b: u32,
}

/// A pre-LN transformer block (decoder layer or vision block).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub ln1: Ln,
    pub wqkv: u32,
    pub wo: u32,
    pub ln2: Ln,
    pub w1: u32,
    pub w2: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PerceiverLayer {
    pub norm_media: Ln,
    pub norm_latents: Ln,
    pub wq: u32,
    pub wkv: u32,
    pub wo: u32,
    pub ff_ln: Ln,
    pub w1: u32,
    pub w2: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CrossAttn {
    /// Index of the decoder layer it runs before.
    pub layer: usize,
    pub ln: Ln,
    pub wq: u32,
    pub wkv: u32,
    pub wo: u32,
    pub attn_gate: u32,
    pub ff_ln: Ln,
    pub w1: u32,
    pub w2: u32,
    pub ff_gate: u32,
}

/// Sizes that the graphs use, derived from a [`ToyConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub b: u32,
    pub t: u32,
    pub m: u32,
    pub d: u32,
    pub h: u32,
    pub dh: u32,
    pub f: u32,
    pub v: u32,
    /// Image slots per batch.
    pub s: u32,
    /// Images per sequence, at most.
    pub ni: u32,
    pub l: u32,
    /// Patches per image.
    pub p: u32,
    /// Floats per patch.
    pub pd: u32,
    /// Vision tokens per image (patches + class token).
    pub vt: u32,
}

/// Word offsets of the per-step integer data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IntsLayout {
    pub tok: u32,
    pub tgt: u32,
    pub time: u32,
    pub len: u32,
    pub slot: u32,
    pub feat: u32,
    pub valid: u32,
    pub step: u32,
    pub total: u32,
}

impl IntsLayout {
    fn new(d: &Dims) -> Self {
        let tok = 0;
        let tgt = tok + d.m;
        let time = tgt + d.m;
        let len = time + d.m;
        let slot = len + d.b;
        let feat = slot + d.b * d.ni;
        let valid = feat + d.s;
        let step = valid + 1;
        Self {
            tok,
            tgt,
            time,
            len,
            slot,
            feat,
            valid,
            step,
            total: step + 3,
        }
    }
}

/// The model: where every parameter lives, and the fixed activations the
/// graphs use. Built once from a [`ToyConfig`]; it holds no GPU objects.
#[derive(Debug)]
pub struct Model {
    pub(crate) dims: Dims,
    /// Every parameter, in arena order.
    pub params: Vec<ParamInfo>,
    pub(crate) vision_conv: u32,
    pub(crate) vision_cls: u32,
    pub(crate) vision_pos: u32,
    pub(crate) vision_ln_pre: Ln,
    pub(crate) vision_blocks: Vec<Block>,
    pub(crate) vision_ln_post: Ln,
    pub(crate) wte: u32,
    pub(crate) wpe: u32,
    pub(crate) blocks: Vec<Block>,
    pub(crate) norm_f: Ln,
    pub(crate) head: u32,
    pub(crate) latents: u32,
    pub(crate) perceiver: Vec<PerceiverLayer>,
    pub(crate) perceiver_norm: Ln,
    pub(crate) xattn: Vec<CrossAttn>,
    /// Arena range of every parameter.
    pub(crate) params_end: u32,
    /// Start of the language model (text stage trains `lm_start..wte_end`).
    pub(crate) lm_start: u32,
    pub(crate) wte_start: u32,
    pub(crate) wte_end: u32,
    /// Flamingo stage trains `wte_start..params_end`; weight decay from here.
    pub(crate) decay_from: u32,
    /// Gradients of `lm_start..params_end`, then Adam's m and v.
    pub(crate) grads: u32,
    pub(crate) adam_m: u32,
    pub(crate) adam_v: u32,
    /// Cached vision features: [images, patches, d].
    pub(crate) feats: u32,
    pub(crate) ints: IntsLayout,
    pub(crate) alloc: Alloc,
}

struct Registry<'a> {
    alloc: &'a mut Alloc,
    params: &'a mut Vec<ParamInfo>,
    group: Option<String>,
}

impl Registry<'_> {
    fn add(&mut self, name: impl Into<String>, shape: &[usize], init: Init) -> u32 {
        let n = shape.iter().product::<usize>() as u32;
        let off = self.alloc.take(n);
        self.params.push(ParamInfo {
            name: name.into(),
            off,
            shape: shape.to_vec(),
            group: self.group.clone(),
            init,
        });
        off
    }

    fn ln(&mut self, prefix: &str, d: usize) -> Ln {
        Ln {
            g: self.add(format!("{prefix}.weight"), &[d], Init::Ones),
            b: self.add(format!("{prefix}.bias"), &[d], Init::Zeros),
        }
    }

    /// A linear weight [out, in] with PyTorch's default init bound 1/sqrt(in).
    fn linear_default(&mut self, name: String, out: usize, inp: usize) -> u32 {
        self.add(name, &[out, inp], Init::Uniform(1.0 / (inp as f32).sqrt()))
    }
}

impl Model {
    /// Lays out every tensor for `config`, or explains which setting the
    /// kernels cannot run.
    pub fn new(config: &ToyConfig) -> Result<Self, ToyError> {
        config.validate()?;
        let d = config.d_model as usize;
        let f = config.mlp_mult as usize * d;
        let v = super::data::VOCAB.len();
        let t = config.context as usize;
        let l = config.latents as usize;
        let patch = config.patch as usize;
        let p = (super::data::IMAGE_SIZE / patch).pow(2);
        let pd = 3 * patch * patch;
        let dims = Dims {
            b: config.batch,
            t: config.context,
            m: config.batch * config.context,
            d: d as u32,
            h: config.heads,
            dh: config.d_model / config.heads,
            f: f as u32,
            v: v as u32,
            s: config.batch + config.batch / 2,
            ni: 2,
            l: config.latents,
            p: p as u32,
            pd: pd as u32,
            vt: p as u32 + 1,
        };

        let mut alloc = Alloc::default();
        let mut params = Vec::new();
        let mut reg = Registry {
            alloc: &mut alloc,
            params: &mut params,
            group: None,
        };

        // Frozen vision encoder: random but fixed by the seed. Positions are
        // as strong as the patch signal, so that where a shape sits survives
        // into the features (the Perceiver itself is order-blind).
        let ve = "vision_encoder";
        let vision_conv = reg.add(
            format!("{ve}.conv1.weight"),
            &[d, 3, patch, patch],
            Init::Normal(1.0 / (pd as f32).sqrt()),
        );
        let vision_cls = reg.add(format!("{ve}.class_embedding"), &[d], Init::Normal(1.0));
        let vision_pos = reg.add(
            format!("{ve}.positional_embedding"),
            &[p + 1, d],
            Init::Normal(1.0),
        );
        let vision_ln_pre = reg.ln(&format!("{ve}.ln_pre"), d);
        let std_d = 1.0 / (d as f32).sqrt();
        let vision_blocks = (0..config.vision_layers as usize)
            .map(|i| {
                let pre = format!("{ve}.transformer.resblocks.{i}");
                Block {
                    ln1: reg.ln(&format!("{pre}.ln_1"), d),
                    wqkv: reg.add(
                        format!("{pre}.attn.in_proj_weight"),
                        &[3 * d, d],
                        Init::Normal(std_d),
                    ),
                    wo: reg.add(
                        format!("{pre}.attn.out_proj.weight"),
                        &[d, d],
                        Init::Normal(std_d),
                    ),
                    ln2: reg.ln(&format!("{pre}.ln_2"), d),
                    w1: reg.add(
                        format!("{pre}.mlp.c_fc.weight"),
                        &[f, d],
                        Init::Normal(std_d),
                    ),
                    w2: reg.add(
                        format!("{pre}.mlp.c_proj.weight"),
                        &[d, f],
                        Init::Normal(1.0 / (f as f32).sqrt()),
                    ),
                }
            })
            .collect();
        let vision_ln_post = reg.ln(&format!("{ve}.ln_post"), d);

        // Language model, MPT-style names. Trained in the text stage only.
        let lm_start = reg.alloc.next;
        let lt = "lang_encoder.transformer";
        let wpe = reg.add(format!("{lt}.wpe.weight"), &[t, d], Init::Normal(0.02));
        let resid_std = 0.02 / (2.0 * config.lm_layers as f32).sqrt();
        let blocks = (0..config.lm_layers as usize)
            .map(|i| {
                let pre = format!("{lt}.blocks.{i}");
                Block {
                    ln1: reg.ln(&format!("{pre}.norm_1"), d),
                    wqkv: reg.add(
                        format!("{pre}.attn.Wqkv.weight"),
                        &[3 * d, d],
                        Init::Normal(0.02),
                    ),
                    wo: reg.add(
                        format!("{pre}.attn.out_proj.weight"),
                        &[d, d],
                        Init::Normal(resid_std),
                    ),
                    ln2: reg.ln(&format!("{pre}.norm_2"), d),
                    w1: reg.add(
                        format!("{pre}.ffn.up_proj.weight"),
                        &[f, d],
                        Init::Normal(0.02),
                    ),
                    w2: reg.add(
                        format!("{pre}.ffn.down_proj.weight"),
                        &[d, f],
                        Init::Normal(resid_std),
                    ),
                }
            })
            .collect();
        let norm_f = reg.ln(&format!("{lt}.norm_f"), d);
        // A wide head init gives the frozen head logit margins that the
        // Flamingo stage can use; at 0.02 its loss stalls near 0.4.
        let head = reg.add(
            "lang_encoder.lm_head.weight",
            &[v, d],
            Init::Normal(config.head_init_std),
        );

        let wte_start = reg.alloc.next;
        reg.group = Some("input_embeddings".into());
        let wte = reg.add(format!("{lt}.wte.weight"), &[v, d], Init::Normal(0.02));
        let wte_end = reg.alloc.next;

        reg.group = Some("perceiver".into());
        let latents = reg.add("perceiver.latents", &[l, d], Init::Normal(1.0));
        let perceiver = (0..config.perceiver_depth as usize)
            .map(|i| {
                let pre = format!("perceiver.layers.{i}");
                PerceiverLayer {
                    norm_media: reg.ln(&format!("{pre}.0.norm_media"), d),
                    norm_latents: reg.ln(&format!("{pre}.0.norm_latents"), d),
                    wq: reg.linear_default(format!("{pre}.0.to_q.weight"), d, d),
                    wkv: reg.linear_default(format!("{pre}.0.to_kv.weight"), 2 * d, d),
                    wo: reg.linear_default(format!("{pre}.0.to_out.weight"), d, d),
                    ff_ln: reg.ln(&format!("{pre}.1.0"), d),
                    w1: reg.linear_default(format!("{pre}.1.1.weight"), f, d),
                    w2: reg.linear_default(format!("{pre}.1.3.weight"), d, f),
                }
            })
            .collect();
        let perceiver_norm = reg.ln("perceiver.norm", d);

        // Gated cross-attention before decoder layers i with (i + 1) % n == 0.
        // Norms and gates first, the decayed weights after them, so that
        // AdamW's weight decay covers one contiguous range.
        let xlayers: Vec<usize> = (0..config.lm_layers as usize)
            .filter(|i| (i + 1) % config.cross_attn_every as usize == 0)
            .collect();
        let mut xattn: Vec<CrossAttn> = Vec::new();
        for &i in &xlayers {
            let pre = format!("lang_encoder.gated_cross_attn_layers.{i}");
            reg.group = Some(format!("gated_cross_attn_layers.{i}"));
            xattn.push(CrossAttn {
                layer: i,
                ln: reg.ln(&format!("{pre}.attn.norm"), d),
                attn_gate: reg.add(format!("{pre}.attn_gate"), &[1], Init::Zeros),
                ff_ln: reg.ln(&format!("{pre}.ff.0"), d),
                ff_gate: reg.add(format!("{pre}.ff_gate"), &[1], Init::Zeros),
                wq: 0,
                wkv: 0,
                wo: 0,
                w1: 0,
                w2: 0,
            });
        }
        let decay_from = reg.alloc.next;
        for x in xattn.iter_mut() {
            let pre = format!("lang_encoder.gated_cross_attn_layers.{}", x.layer);
            reg.group = Some(format!("gated_cross_attn_layers.{}", x.layer));
            x.wq = reg.linear_default(format!("{pre}.attn.to_q.weight"), d, d);
            x.wkv = reg.linear_default(format!("{pre}.attn.to_kv.weight"), 2 * d, d);
            x.wo = reg.linear_default(format!("{pre}.attn.to_out.weight"), d, d);
            x.w1 = reg.linear_default(format!("{pre}.ff.1.weight"), f, d);
            x.w2 = reg.linear_default(format!("{pre}.ff.3.weight"), d, f);
        }
        let params_end = reg.alloc.next;

        let trainable = params_end - lm_start;
        let grads = alloc.take(trainable);
        let adam_m = alloc.take(trainable);
        let adam_v = alloc.take(trainable);
        let feats = alloc.take((config.train_images + config.eval_images) * dims.p * dims.d);
        Ok(Self {
            ints: IntsLayout::new(&dims),
            dims,
            params,
            vision_conv,
            vision_cls,
            vision_pos,
            vision_ln_pre,
            vision_blocks,
            vision_ln_post,
            wte,
            wpe,
            blocks,
            norm_f,
            head,
            latents,
            perceiver,
            perceiver_norm,
            xattn,
            params_end,
            lm_start,
            wte_start,
            wte_end,
            decay_from,
            grads,
            adam_m,
            adam_v,
            feats,
            alloc,
        })
    }

    /// Gradient offset of the parameter element at `off` (which must be
    /// trainable in some stage).
    pub(crate) fn grad(&self, off: u32) -> u32 {
        debug_assert!(off >= self.lm_start && off < self.params_end);
        self.grads + off - self.lm_start
    }

    /// Initial values of every parameter (`lm_start..` included), from `seed`.
    pub(crate) fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut out = vec![0f32; self.params_end as usize];
        for (i, p) in self.params.iter().enumerate() {
            let mut rng = Rng::stream(seed, 0x9a7a, i as u64);
            let dst = &mut out[p.off as usize..(p.off + p.len()) as usize];
            for x in dst.iter_mut() {
                *x = match p.init {
                    Init::Normal(std) => std * rng.normal(),
                    Init::Uniform(bound) => bound * (2.0 * rng.uniform() - 1.0),
                    Init::Ones => 1.0,
                    Init::Zeros => 0.0,
                };
            }
        }
        out
    }

    /// Arena range `[start, end)` that `stage` trains.
    pub(crate) fn trainable(&self, stage: Stage) -> (u32, u32) {
        match stage {
            Stage::Text => (self.lm_start, self.wte_end),
            Stage::Flamingo => (self.wte_start, self.params_end),
        }
    }

    /// Number of parameters that `stage` trains (the embedding counts whole).
    pub fn trainable_count(&self, stage: Stage) -> u32 {
        let (a, b) = self.trainable(stage);
        self.params
            .iter()
            .filter(|p| p.off >= a && p.off < b)
            .map(|p| p.len())
            .sum()
    }
}

/// Activations of one pre-LN block, kept for its backward pass.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockActs {
    x_in: RowMap,
    ln1: u32,
    ln1_stats: u32,
    attn: AttentionParams,
    ctx: u32,
    x_mid: u32,
    ln2: u32,
    ln2_stats: u32,
    u: u32,
    a: u32,
    x_out: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CrossActs {
    x_in: u32,
    ln: u32,
    ln_stats: u32,
    attn: AttentionParams,
    ctx: u32,
    branch_a: u32,
    x_a: u32,
    ff_ln: u32,
    ff_stats: u32,
    u: u32,
    a: u32,
    branch_f: u32,
    x_f: u32,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct PerceiverActs {
    lat_in: RowMap,
    media_stats: u32,
    lat_stats: u32,
    kvin: u32,
    attn: AttentionParams,
    ctx: u32,
    lat_mid: u32,
    ff_ln: u32,
    ff_stats: u32,
    u: u32,
    a: u32,
    lat_out: u32,
}

/// The graphs of one stage, as dispatch lists, and where their results are.
#[derive(Debug)]
pub(crate) struct Graphs {
    /// Forward to the logits.
    pub forward: Vec<Dispatch>,
    /// Loss, backward to every trainable gradient.
    pub backward: Vec<Dispatch>,
    /// AdamW over the stage's trainable range.
    pub update: Vec<Dispatch>,
    /// [m, v] logits.
    pub logits: u32,
    /// [m] per-row losses.
    pub loss_rows: u32,
}

/// Records dispatches while allocating the activations they use.
pub(crate) struct Builder<'m> {
    pub model: &'m Model,
    pub alloc: Alloc,
    pub ops: Vec<Dispatch>,
}

fn dense(off: u32, width: u32) -> RowMap {
    RowMap::dense(off, width)
}

impl<'m> Builder<'m> {
    pub fn new(model: &'m Model, alloc_from: u32) -> Self {
        Self {
            model,
            alloc: Alloc { next: alloc_from },
            ops: Vec::new(),
        }
    }

    fn take(&mut self, n: u32) -> u32 {
        self.alloc.take(n)
    }

    fn attention(&self, mask: AttentionMask, batch_off: (u32, u32)) -> AttentionParams {
        let d = &self.model.dims;
        AttentionParams {
            q_off: 0,
            q_rs: 0,
            k_off: 0,
            k_rs: 0,
            v_off: 0,
            v_rs: 0,
            o_off: 0,
            o_rs: d.d,
            p_off: 0,
            tq: 0,
            tk: 0,
            dh: d.dh,
            heads: d.h,
            mode: mask as u32,
            scale: 1.0 / (d.dh as f32).sqrt(),
            len_off: batch_off.0,
            time_off: batch_off.1,
            slot_off: self.model.ints.slot,
            media: d.ni,
            latents: d.l,
        }
    }

    /// A pre-LN transformer block over `batch` sequences of `t` tokens.
    pub fn block_forward(
        &mut self,
        w: &Block,
        x_in: RowMap,
        batch: u32,
        t: u32,
        mask: AttentionMask,
    ) -> BlockActs {
        let d = self.model.dims;
        let (dm, f) = (d.d, d.f);
        let rows = batch * t;
        let ln1 = self.take(rows * dm);
        let ln1_stats = self.take(rows * 2);
        let qkv = self.take(rows * 3 * dm);
        let p = ln_linear(
            self,
            rows,
            dm,
            3 * dm,
            x_in,
            w.wqkv,
            dense(qkv, 3 * dm),
            Ln {
                g: w.ln1.g,
                b: w.ln1.b,
            },
            ln1_stats,
            ln1,
        );
        self.ops.push(Dispatch::linear(p));

        let ctx = self.take(rows * dm);
        let probs = self.take(batch * d.h * t * t);
        let mut a = self.attention(mask, (self.model.ints.len, NONE));
        a.q_off = qkv;
        a.q_rs = 3 * dm;
        a.k_off = qkv + dm;
        a.k_rs = 3 * dm;
        a.v_off = qkv + 2 * dm;
        a.v_rs = 3 * dm;
        a.o_off = ctx;
        a.p_off = probs;
        a.tq = t;
        a.tk = t;
        self.ops.push(Dispatch::attention(a, batch));

        let x_mid = self.take(rows * dm);
        let mut p = LinearParams::new(rows, dm, dm, dense(ctx, dm), w.wo, dense(x_mid, dm));
        p.epi = Epilogue::Residual as u32;
        p.res = x_in;
        self.ops.push(Dispatch::linear(p));

        let ln2 = self.take(rows * dm);
        let ln2_stats = self.take(rows * 2);
        let u = self.take(rows * f);
        let act = self.take(rows * f);
        let mut p = ln_linear(
            self,
            rows,
            dm,
            f,
            dense(x_mid, dm),
            w.w1,
            dense(act, f),
            Ln {
                g: w.ln2.g,
                b: w.ln2.b,
            },
            ln2_stats,
            ln2,
        );
        p.epi = Epilogue::Gelu as u32;
        p.aux = dense(u, f);
        self.ops.push(Dispatch::linear(p));

        let x_out = self.take(rows * dm);
        let mut p = LinearParams::new(rows, f, dm, dense(act, f), w.w2, dense(x_out, dm));
        p.epi = Epilogue::Residual as u32;
        p.res = dense(x_mid, dm);
        self.ops.push(Dispatch::linear(p));
        BlockActs {
            x_in,
            ln1,
            ln1_stats,
            attn: a,
            ctx,
            x_mid,
            ln2,
            ln2_stats,
            u,
            a: act,
            x_out,
        }
    }

    /// Backward of a block: returns the input gradient. Weight and LN
    /// gradients are written only when `train` is set.
    pub fn block_backward(
        &mut self,
        w: &Block,
        a: &BlockActs,
        dx_out: u32,
        rows: u32,
        batch: u32,
        train: bool,
    ) -> u32 {
        let md = self.model;
        let d = md.dims;
        let (dm, f) = (d.d, d.f);
        let du = self.take(rows * f);
        let mut p = LinearParams::transposed(rows, dm, f, dense(dx_out, dm), w.w2, dense(du, f));
        p.epi = Epilogue::GeluBackward as u32;
        p.aux = dense(a.u, f);
        self.ops.push(Dispatch::linear(p));

        let dx_mid = self.take(rows * dm);
        let dln2 = self.take(rows * dm);
        self.ln_backward_linear(
            rows,
            f,
            dense(du, f),
            w.w1,
            dx_mid,
            dln2,
            dense(a.x_mid, dm),
            a.ln2_stats,
            w.ln2,
            Some(dense(dx_out, dm)),
            None,
        );

        let dctx = self.take(rows * dm);
        let p = LinearParams::transposed(rows, dm, dm, dense(dx_mid, dm), w.wo, dense(dctx, dm));
        self.ops.push(Dispatch::linear(p));

        let dqkv = self.take(rows * 3 * dm);
        let bp = AttentionBackwardParams::of(&a.attn, dctx, dqkv, dqkv + dm, dqkv + 2 * dm);
        self.ops.push(Dispatch::attention_backward(bp, batch));

        let dx_in = self.take(rows * dm);
        let dln1 = self.take(rows * dm);
        self.ln_backward_linear(
            rows,
            3 * dm,
            dense(dqkv, 3 * dm),
            w.wqkv,
            dx_in,
            dln1,
            a.x_in,
            a.ln1_stats,
            w.ln1,
            Some(dense(dx_mid, dm)),
            None,
        );

        if train {
            self.grad_weight(
                rows,
                dense(dx_out, dm),
                dense(a.a, f),
                dm,
                f,
                md.grad(w.w2),
                NONE,
            );
            self.grad_weight(
                rows,
                dense(du, f),
                dense(a.ln2, dm),
                f,
                dm,
                md.grad(w.w1),
                NONE,
            );
            self.grad_weight(
                rows,
                dense(dx_mid, dm),
                dense(a.ctx, dm),
                dm,
                dm,
                md.grad(w.wo),
                NONE,
            );
            self.grad_weight(
                rows,
                dense(dqkv, 3 * dm),
                dense(a.ln1, dm),
                3 * dm,
                dm,
                md.grad(w.wqkv),
                NONE,
            );
            self.grad_ln(
                rows,
                dense(dln2, dm),
                dense(a.x_mid, dm),
                a.ln2_stats,
                w.ln2,
            );
            self.grad_ln(rows, dense(dln1, dm), a.x_in, a.ln1_stats, w.ln1);
        }
        dx_in
    }

    /// `dln = x W (+ add)`, then `y = LN_backward(dln) + res` where the
    /// layer's input was LayerNorm(`ln_x`).
    #[allow(clippy::too_many_arguments)]
    fn ln_backward_linear(
        &mut self,
        rows: u32,
        k: u32,
        x: RowMap,
        w_off: u32,
        y: u32,
        dln: u32,
        ln_x: RowMap,
        stats: u32,
        ln: Ln,
        res: Option<RowMap>,
        add: Option<RowMap>,
    ) {
        let dm = self.model.dims.d;
        let mut p = LinearParams::transposed(rows, k, dm, x, w_off, dense(dln, dm));
        if let Some(add) = add {
            p.add = add;
            p.flags |= linear_flags::ADD;
        }
        self.ops.push(Dispatch::linear(p));
        self.ops
            .push(Dispatch::layer_norm_backward(LayerNormBackwardParams {
                dy: dense(dln, dm),
                x: ln_x,
                dx: dense(y, dm),
                res: res.unwrap_or_else(RowMap::none),
                m: rows,
                n: dm,
                gamma_off: ln.g,
                stats_off: stats,
            }));
    }

    #[allow(clippy::too_many_arguments)]
    fn grad_weight(
        &mut self,
        rows: u32,
        dy: RowMap,
        x: RowMap,
        n: u32,
        k: u32,
        dw: u32,
        gate: u32,
    ) {
        self.ops
            .push(Dispatch::linear_grad_weight(LinearGradWeightParams {
                dy,
                x,
                m: rows,
                n,
                k,
                dw_off: dw,
                gate_off: gate,
                accumulate: 0,
                _pad: [0; 2],
            }));
    }

    fn grad_ln(&mut self, rows: u32, dy: RowMap, x: RowMap, stats: u32, ln: Ln) {
        let md = self.model;
        self.ops
            .push(Dispatch::layer_norm_grad_params(LayerNormGradParams {
                dy,
                x,
                m: rows,
                n: md.dims.d,
                stats_off: stats,
                dgamma_off: md.grad(ln.g),
                dbeta_off: md.grad(ln.b),
                accumulate: 0,
                _pad: [0; 2],
            }));
    }

    fn layer_norm(&mut self, rows: u32, x: RowMap, y: RowMap, stats: u32, ln: Ln) {
        self.ops.push(Dispatch::layer_norm(LayerNormParams {
            x,
            y,
            m: rows,
            n: self.model.dims.d,
            gamma_off: ln.g,
            beta_off: ln.b,
            stats_off: stats,
            eps: 1e-5,
            _pad: [0; 2],
        }));
    }

    /// The frozen vision encoder over `images` patch tables at `patches`
    /// ([images * p, pd]), writing the [images * p, d] features to `out`
    /// (class token dropped, after ln_post, as OpenFlamingo takes them).
    pub fn vision_forward(&mut self, patches: u32, images: u32, out: u32) {
        let md = self.model;
        let d = md.dims;
        let tokens = self.take(images * d.vt * d.d);
        let p = LinearParams::new(
            images * d.p,
            d.pd,
            d.d,
            dense(patches, d.pd),
            md.vision_conv,
            RowMap::grouped(tokens + d.d, d.p, d.vt * d.d, d.d),
        );
        self.ops.push(Dispatch::linear(p));
        self.ops.push(Dispatch::vision_embed(VisionEmbedParams {
            x_off: tokens,
            images,
            tokens: d.vt,
            n: d.d,
            cls_off: md.vision_cls,
            pos_off: md.vision_pos,
            _pad: [0; 2],
        }));
        let rows = images * d.vt;
        let x0 = self.take(rows * d.d);
        let stats = self.take(rows * 2);
        self.layer_norm(
            rows,
            dense(tokens, d.d),
            dense(x0, d.d),
            stats,
            md.vision_ln_pre,
        );
        let mut x = dense(x0, d.d);
        for blk in &md.vision_blocks {
            let acts = self.block_forward(blk, x, images, d.vt, AttentionMask::None);
            x = dense(acts.x_out, d.d);
        }
        let stats = self.take(images * d.p * 2);
        let x_patches = RowMap::grouped(x.off + d.d, d.p, d.vt * d.d, d.d);
        self.layer_norm(
            images * d.p,
            x_patches,
            dense(out, d.d),
            stats,
            md.vision_ln_post,
        );
    }
}

/// Everything the Flamingo-stage backward needs from its forward.
struct FlamingoActs {
    media: u32,
    perceiver: Vec<PerceiverActs>,
    lat_norm: u32,
    lat_norm_stats: u32,
    cross: Vec<(usize, CrossActs)>,
}

impl Builder<'_> {
    fn perceiver_forward(&mut self) -> FlamingoActs {
        let md = self.model;
        let d = md.dims;
        let (dm, f, s, l, pp) = (d.d, d.f, d.s, d.l, d.p);
        let media = self.take(s * pp * dm);
        self.ops.push(Dispatch::gather_rows(GatherRowsParams {
            x_off: md.feats,
            y_off: media,
            idx_off: md.ints.feat,
            slots: s,
            block: pp * dm,
            _pad: [0; 3],
        }));
        let kv_rows = s * (pp + l);
        let mut lat_in = RowMap::grouped(md.latents, l, 0, dm);
        let mut acts = Vec::new();
        for w in &md.perceiver {
            let kvin = self.take(kv_rows * dm);
            let media_stats = self.take(s * pp * 2);
            let lat_stats = self.take(s * l * 2);
            let kvin_media = RowMap::grouped(kvin, pp, (pp + l) * dm, dm);
            let kvin_lat = RowMap::grouped(kvin + pp * dm, l, (pp + l) * dm, dm);
            self.layer_norm(
                s * pp,
                dense(media, dm),
                kvin_media,
                media_stats,
                w.norm_media,
            );
            self.layer_norm(s * l, lat_in, kvin_lat, lat_stats, w.norm_latents);
            let q = self.take(s * l * dm);
            self.ops.push(Dispatch::linear(LinearParams::new(
                s * l,
                dm,
                dm,
                kvin_lat,
                w.wq,
                dense(q, dm),
            )));
            let kv = self.take(kv_rows * 2 * dm);
            self.ops.push(Dispatch::linear(LinearParams::new(
                kv_rows,
                dm,
                2 * dm,
                dense(kvin, dm),
                w.wkv,
                dense(kv, 2 * dm),
            )));
            let ctx = self.take(s * l * dm);
            let probs = self.take(s * d.h * l * (pp + l));
            let mut a = self.attention(AttentionMask::None, (NONE, NONE));
            a.q_off = q;
            a.q_rs = dm;
            a.k_off = kv;
            a.k_rs = 2 * dm;
            a.v_off = kv + dm;
            a.v_rs = 2 * dm;
            a.o_off = ctx;
            a.p_off = probs;
            a.tq = l;
            a.tk = pp + l;
            self.ops.push(Dispatch::attention(a, s));
            let lat_mid = self.take(s * l * dm);
            let mut p = LinearParams::new(s * l, dm, dm, dense(ctx, dm), w.wo, dense(lat_mid, dm));
            p.epi = Epilogue::Residual as u32;
            p.res = lat_in;
            self.ops.push(Dispatch::linear(p));
            let ff_ln = self.take(s * l * dm);
            let ff_stats = self.take(s * l * 2);
            let u = self.take(s * l * f);
            let act = self.take(s * l * f);
            let mut p = ln_linear(
                self,
                s * l,
                dm,
                f,
                dense(lat_mid, dm),
                w.w1,
                dense(act, f),
                Ln {
                    g: w.ff_ln.g,
                    b: w.ff_ln.b,
                },
                ff_stats,
                ff_ln,
            );
            p.epi = Epilogue::Gelu as u32;
            p.aux = dense(u, f);
            self.ops.push(Dispatch::linear(p));
            let lat_out = self.take(s * l * dm);
            let mut p = LinearParams::new(s * l, f, dm, dense(act, f), w.w2, dense(lat_out, dm));
            p.epi = Epilogue::Residual as u32;
            p.res = dense(lat_mid, dm);
            self.ops.push(Dispatch::linear(p));
            acts.push(PerceiverActs {
                lat_in,
                media_stats,
                lat_stats,
                kvin,
                attn: a,
                ctx,
                lat_mid,
                ff_ln,
                ff_stats,
                u,
                a: act,
                lat_out,
            });
            lat_in = dense(lat_out, dm);
        }
        let lat_norm = self.take(s * l * dm);
        let lat_norm_stats = self.take(s * l * 2);
        self.layer_norm(
            s * l,
            lat_in,
            dense(lat_norm, dm),
            lat_norm_stats,
            md.perceiver_norm,
        );
        FlamingoActs {
            media,
            perceiver: acts,
            lat_norm,
            lat_norm_stats,
            cross: Vec::new(),
        }
    }

    fn cross_forward(&mut self, w: &CrossAttn, x_in: u32, lat_norm: u32) -> CrossActs {
        let md = self.model;
        let d = md.dims;
        let (dm, f, m) = (d.d, d.f, d.m);
        let kv_rows = d.s * d.l;
        let kv = self.take(kv_rows * 2 * dm);
        self.ops.push(Dispatch::linear(LinearParams::new(
            kv_rows,
            dm,
            2 * dm,
            dense(lat_norm, dm),
            w.wkv,
            dense(kv, 2 * dm),
        )));
        let ln = self.take(m * dm);
        let ln_stats = self.take(m * 2);
        let q = self.take(m * dm);
        let p = ln_linear(
            self,
            m,
            dm,
            dm,
            dense(x_in, dm),
            w.wq,
            dense(q, dm),
            Ln {
                g: w.ln.g,
                b: w.ln.b,
            },
            ln_stats,
            ln,
        );
        self.ops.push(Dispatch::linear(p));
        let ctx = self.take(m * dm);
        let probs = self.take(d.b * d.h * d.t * d.ni * d.l);
        let mut a = self.attention(AttentionMask::Media, (NONE, md.ints.time));
        a.q_off = q;
        a.q_rs = dm;
        a.k_off = kv;
        a.k_rs = 2 * dm;
        a.v_off = kv + dm;
        a.v_rs = 2 * dm;
        a.o_off = ctx;
        a.p_off = probs;
        a.tq = d.t;
        a.tk = d.ni * d.l;
        self.ops.push(Dispatch::attention(a, d.b));
        let branch_a = self.take(m * dm);
        let x_a = self.take(m * dm);
        let mut p = LinearParams::new(m, dm, dm, dense(ctx, dm), w.wo, dense(x_a, dm));
        p.epi = Epilogue::Residual as u32;
        p.res = dense(x_in, dm);
        p.gate_off = w.attn_gate;
        p.aux = dense(branch_a, dm);
        p.flags = linear_flags::AUX;
        self.ops.push(Dispatch::linear(p));
        let ff_ln = self.take(m * dm);
        let ff_stats = self.take(m * 2);
        let u = self.take(m * f);
        let act = self.take(m * f);
        let mut p = ln_linear(
            self,
            m,
            dm,
            f,
            dense(x_a, dm),
            w.w1,
            dense(act, f),
            Ln {
                g: w.ff_ln.g,
                b: w.ff_ln.b,
            },
            ff_stats,
            ff_ln,
        );
        p.epi = Epilogue::Gelu as u32;
        p.aux = dense(u, f);
        self.ops.push(Dispatch::linear(p));
        let branch_f = self.take(m * dm);
        let x_f = self.take(m * dm);
        let mut p = LinearParams::new(m, f, dm, dense(act, f), w.w2, dense(x_f, dm));
        p.epi = Epilogue::Residual as u32;
        p.res = dense(x_a, dm);
        p.gate_off = w.ff_gate;
        p.aux = dense(branch_f, dm);
        p.flags = linear_flags::AUX;
        self.ops.push(Dispatch::linear(p));
        CrossActs {
            x_in,
            ln,
            ln_stats,
            attn: a,
            ctx,
            branch_a,
            x_a,
            ff_ln,
            ff_stats,
            u,
            a: act,
            branch_f,
            x_f,
        }
    }

    /// Backward of a gated cross-attention block; returns dx_in and the
    /// [slots * latents, d] gradient it sends to the Perceiver output.
    fn cross_backward(
        &mut self,
        w: &CrossAttn,
        a: &CrossActs,
        dx_f: u32,
        lat_norm: u32,
    ) -> (u32, u32) {
        let md = self.model;
        let d = md.dims;
        let (dm, f, m) = (d.d, d.f, d.m);
        self.ops.push(Dispatch::gate_backward(GateBackwardParams {
            dy: dense(dx_f, dm),
            f: dense(a.branch_f, dm),
            m,
            n: dm,
            gate_off: w.ff_gate,
            grad_off: md.grad(w.ff_gate),
        }));
        let du = self.take(m * f);
        let mut p = LinearParams::transposed(m, dm, f, dense(dx_f, dm), w.w2, dense(du, f));
        p.pro = Prologue::Gate as u32;
        p.gate_off = w.ff_gate;
        p.epi = Epilogue::GeluBackward as u32;
        p.aux = dense(a.u, f);
        self.ops.push(Dispatch::linear(p));
        self.grad_weight(
            m,
            dense(dx_f, dm),
            dense(a.a, f),
            dm,
            f,
            md.grad(w.w2),
            w.ff_gate,
        );
        let dx_a = self.take(m * dm);
        let dff = self.take(m * dm);
        self.ln_backward_linear(
            m,
            f,
            dense(du, f),
            w.w1,
            dx_a,
            dff,
            dense(a.x_a, dm),
            a.ff_stats,
            w.ff_ln,
            Some(dense(dx_f, dm)),
            None,
        );
        self.grad_weight(
            m,
            dense(du, f),
            dense(a.ff_ln, dm),
            f,
            dm,
            md.grad(w.w1),
            NONE,
        );
        self.grad_ln(m, dense(dff, dm), dense(a.x_a, dm), a.ff_stats, w.ff_ln);

        self.ops.push(Dispatch::gate_backward(GateBackwardParams {
            dy: dense(dx_a, dm),
            f: dense(a.branch_a, dm),
            m,
            n: dm,
            gate_off: w.attn_gate,
            grad_off: md.grad(w.attn_gate),
        }));
        let dctx = self.take(m * dm);
        let mut p = LinearParams::transposed(m, dm, dm, dense(dx_a, dm), w.wo, dense(dctx, dm));
        p.pro = Prologue::Gate as u32;
        p.gate_off = w.attn_gate;
        self.ops.push(Dispatch::linear(p));
        self.grad_weight(
            m,
            dense(dx_a, dm),
            dense(a.ctx, dm),
            dm,
            dm,
            md.grad(w.wo),
            w.attn_gate,
        );

        let dq = self.take(m * dm);
        let kv_rows = d.s * d.l;
        let dkv = self.take(kv_rows * 2 * dm);
        let bp = AttentionBackwardParams::of(&a.attn, dctx, dq, dkv, dkv + dm);
        self.ops.push(Dispatch::attention_backward(bp, d.b));
        let dx_in = self.take(m * dm);
        let dln = self.take(m * dm);
        self.ln_backward_linear(
            m,
            dm,
            dense(dq, dm),
            w.wq,
            dx_in,
            dln,
            dense(a.x_in, dm),
            a.ln_stats,
            w.ln,
            Some(dense(dx_a, dm)),
            None,
        );
        self.grad_weight(
            m,
            dense(dq, dm),
            dense(a.ln, dm),
            dm,
            dm,
            md.grad(w.wq),
            NONE,
        );
        self.grad_ln(m, dense(dln, dm), dense(a.x_in, dm), a.ln_stats, w.ln);
        self.grad_weight(
            kv_rows,
            dense(dkv, 2 * dm),
            dense(lat_norm, dm),
            2 * dm,
            dm,
            md.grad(w.wkv),
            NONE,
        );
        (dx_in, dkv)
    }

    fn perceiver_backward(&mut self, fa: &FlamingoActs, dlat_out_last: u32) {
        let md = self.model;
        let d = md.dims;
        let (dm, f, s, l, pp) = (d.d, d.f, d.s, d.l, d.p);
        let kv_rows = s * (pp + l);
        let mut dlat_out = dlat_out_last;
        for (w, a) in md.perceiver.iter().zip(&fa.perceiver).rev() {
            let rows = s * l;
            let du = self.take(rows * f);
            let mut p =
                LinearParams::transposed(rows, dm, f, dense(dlat_out, dm), w.w2, dense(du, f));
            p.epi = Epilogue::GeluBackward as u32;
            p.aux = dense(a.u, f);
            self.ops.push(Dispatch::linear(p));
            self.grad_weight(
                rows,
                dense(dlat_out, dm),
                dense(a.a, f),
                dm,
                f,
                md.grad(w.w2),
                NONE,
            );
            let dlat_mid = self.take(rows * dm);
            let dff = self.take(rows * dm);
            self.ln_backward_linear(
                rows,
                f,
                dense(du, f),
                w.w1,
                dlat_mid,
                dff,
                dense(a.lat_mid, dm),
                a.ff_stats,
                w.ff_ln,
                Some(dense(dlat_out, dm)),
                None,
            );
            self.grad_weight(
                rows,
                dense(du, f),
                dense(a.ff_ln, dm),
                f,
                dm,
                md.grad(w.w1),
                NONE,
            );
            self.grad_ln(
                rows,
                dense(dff, dm),
                dense(a.lat_mid, dm),
                a.ff_stats,
                w.ff_ln,
            );

            let dctx = self.take(rows * dm);
            let p =
                LinearParams::transposed(rows, dm, dm, dense(dlat_mid, dm), w.wo, dense(dctx, dm));
            self.ops.push(Dispatch::linear(p));
            self.grad_weight(
                rows,
                dense(dlat_mid, dm),
                dense(a.ctx, dm),
                dm,
                dm,
                md.grad(w.wo),
                NONE,
            );
            let dq = self.take(rows * dm);
            let dkv = self.take(kv_rows * 2 * dm);
            let bp = AttentionBackwardParams::of(&a.attn, dctx, dq, dkv, dkv + dm);
            self.ops.push(Dispatch::attention_backward(bp, s));
            let kvin_lat = RowMap::grouped(a.kvin + pp * dm, l, (pp + l) * dm, dm);
            self.grad_weight(rows, dense(dq, dm), kvin_lat, dm, dm, md.grad(w.wq), NONE);
            self.grad_weight(
                kv_rows,
                dense(dkv, 2 * dm),
                dense(a.kvin, dm),
                2 * dm,
                dm,
                md.grad(w.wkv),
                NONE,
            );
            let dkvin = self.take(kv_rows * dm);
            let p = LinearParams::transposed(
                kv_rows,
                2 * dm,
                dm,
                dense(dkv, 2 * dm),
                w.wkv,
                dense(dkvin, dm),
            );
            self.ops.push(Dispatch::linear(p));
            let dlat_in = self.take(rows * dm);
            let dll = self.take(rows * dm);
            let dkvin_lat = RowMap::grouped(dkvin + pp * dm, l, (pp + l) * dm, dm);
            self.ln_backward_linear(
                rows,
                dm,
                dense(dq, dm),
                w.wq,
                dlat_in,
                dll,
                a.lat_in,
                a.lat_stats,
                w.norm_latents,
                Some(dense(dlat_mid, dm)),
                Some(dkvin_lat),
            );
            self.grad_ln(rows, dense(dll, dm), a.lat_in, a.lat_stats, w.norm_latents);
            let dkvin_media = RowMap::grouped(dkvin, pp, (pp + l) * dm, dm);
            self.grad_ln(
                s * pp,
                dkvin_media,
                dense(fa.media, dm),
                a.media_stats,
                w.norm_media,
            );
            dlat_out = dlat_in;
        }
        self.ops.push(Dispatch::sum_rows(SumRowsParams {
            x_off: dlat_out,
            groups: s,
            rows: l,
            n: dm,
            y_off: md.grad(md.latents),
            accumulate: 0,
            _pad: [0; 2],
        }));
    }

    /// The graphs of `stage`: forward to the logits, loss and backward,
    /// and AdamW.
    pub fn stage(mut self, stage: Stage, hyper: &AdamHyper) -> (Graphs, u32) {
        let md = self.model;
        let d = md.dims;
        let (dm, m) = (d.d, d.m);
        let flamingo = stage == Stage::Flamingo;

        let x0 = self.take(m * dm);
        self.ops.push(Dispatch::embedding(EmbeddingParams {
            tok_off: md.ints.tok,
            m,
            n: dm,
            t: d.t,
            wte_off: md.wte,
            wpe_off: md.wpe,
            x_off: x0,
            vocab: d.v,
        }));
        let mut fa = flamingo.then(|| self.perceiver_forward());
        let mut x = x0;
        let mut block_acts = Vec::new();
        for (i, blk) in md.blocks.iter().enumerate() {
            if let Some(fa) = fa.as_mut() {
                if let Some(w) = md.xattn.iter().find(|c| c.layer == i) {
                    let ca = self.cross_forward(w, x, fa.lat_norm);
                    x = ca.x_f;
                    fa.cross.push((i, ca));
                }
            }
            let acts = self.block_forward(blk, dense(x, dm), d.b, d.t, AttentionMask::Causal);
            x = acts.x_out;
            block_acts.push(acts);
        }
        let lnf = self.take(m * dm);
        let lnf_stats = self.take(m * 2);
        let logits = self.take(m * d.v);
        let p = ln_linear(
            &mut self,
            m,
            dm,
            d.v,
            dense(x, dm),
            md.head,
            dense(logits, d.v),
            Ln {
                g: md.norm_f.g,
                b: md.norm_f.b,
            },
            lnf_stats,
            lnf,
        );
        self.ops.push(Dispatch::linear(p));
        let forward = std::mem::take(&mut self.ops);

        let loss_rows = self.take(m);
        let dlogits = self.take(m * d.v);
        self.ops.push(Dispatch::cross_entropy(CrossEntropyParams {
            logits_off: logits,
            m,
            vocab: d.v,
            tgt_off: md.ints.tgt,
            valid_off: md.ints.valid,
            loss_off: loss_rows,
            dlogits_off: dlogits,
            _pad: 0,
        }));
        let train_lm = stage == Stage::Text;
        let dx = self.take(m * dm);
        let dlnf = self.take(m * dm);
        self.ln_backward_linear(
            m,
            d.v,
            dense(dlogits, d.v),
            md.head,
            dx,
            dlnf,
            dense(x, dm),
            lnf_stats,
            md.norm_f,
            None,
            None,
        );
        if train_lm {
            self.grad_weight(
                m,
                dense(dlogits, d.v),
                dense(lnf, dm),
                d.v,
                dm,
                md.grad(md.head),
                NONE,
            );
            self.grad_ln(m, dense(dlnf, dm), dense(x, dm), lnf_stats, md.norm_f);
        }
        let mut dx = dx;
        let mut dmedia_part: Option<u32> = None;
        let n_cross = fa.as_ref().map_or(0, |fa| fa.cross.len());
        let mut seen_cross = 0;
        for (i, blk) in md.blocks.iter().enumerate().rev() {
            dx = self.block_backward(blk, &block_acts[i], dx, m, d.b, train_lm);
            let Some(fa) = fa.as_ref() else { continue };
            let Some((_, ca)) = fa.cross.iter().find(|(j, _)| *j == i) else {
                continue;
            };
            let w = md
                .xattn
                .iter()
                .find(|c| c.layer == i)
                .expect("cross acts match a block");
            let (dx_in, dkv) = self.cross_backward(w, ca, dx, fa.lat_norm);
            dx = dx_in;
            seen_cross += 1;
            let kv_rows = d.s * d.l;
            let dkv_map = dense(dkv, 2 * dm);
            if seen_cross < n_cross {
                let part = *dmedia_part.get_or_insert_with(|| self.alloc.take(kv_rows * dm));
                let mut p =
                    LinearParams::transposed(kv_rows, 2 * dm, dm, dkv_map, w.wkv, dense(part, dm));
                if seen_cross > 1 {
                    p.flags |= linear_flags::ACCUM;
                }
                self.ops.push(Dispatch::linear(p));
            } else {
                let dlat_out = self.take(kv_rows * dm);
                let dlatn = self.take(kv_rows * dm);
                let last = fa
                    .perceiver
                    .last()
                    .expect("the Perceiver has layers")
                    .lat_out;
                let add = dmedia_part.map(|o| dense(o, dm));
                self.ln_backward_linear(
                    kv_rows,
                    2 * dm,
                    dkv_map,
                    w.wkv,
                    dlat_out,
                    dlatn,
                    dense(last, dm),
                    fa.lat_norm_stats,
                    md.perceiver_norm,
                    None,
                    add,
                );
                self.grad_ln(
                    kv_rows,
                    dense(dlatn, dm),
                    dense(last, dm),
                    fa.lat_norm_stats,
                    md.perceiver_norm,
                );
                self.perceiver_backward(fa, dlat_out);
            }
        }
        let allowed = if train_lm {
            [0; 4]
        } else {
            [IMAGE, END_OF_CHUNK, 0, 0]
        };
        self.ops.push(Dispatch::embedding_backward(
            EmbeddingBackwardParams {
                tok_off: md.ints.tok,
                m,
                n: dm,
                dx_off: dx,
                dwte_off: md.grad(md.wte),
                all_rows: u32::from(train_lm),
                n_allowed: if train_lm { 0 } else { 2 },
                _pad: 0,
                allowed,
            },
            d.v,
        ));
        if train_lm {
            self.ops.push(Dispatch::sum_rows(SumRowsParams {
                x_off: dx,
                groups: d.b,
                rows: d.t,
                n: dm,
                y_off: md.grad(md.wpe),
                accumulate: 0,
                _pad: [0; 2],
            }));
        }
        let backward = std::mem::take(&mut self.ops);

        let (start, end) = md.trainable(stage);
        let decay_from = if flamingo {
            md.decay_from - start
        } else {
            end - start
        };
        let update = vec![Dispatch::adamw(AdamWParams {
            n: end - start,
            p_off: start,
            g_off: md.grad(start),
            m_off: md.adam_m + start - md.lm_start,
            v_off: md.adam_v + start - md.lm_start,
            decay_from,
            step_off: md.ints.step,
            _pad: 0,
            beta1: hyper.beta1,
            beta2: hyper.beta2,
            eps: hyper.eps,
            weight_decay: if flamingo { hyper.weight_decay } else { 0.0 },
        })];
        (
            Graphs {
                forward,
                backward,
                update,
                logits,
                loss_rows,
            },
            self.alloc.next,
        )
    }
}

/// AdamW's constants.
#[derive(Clone, Copy, Debug)]
pub struct AdamHyper {
    /// First-moment decay (0.9).
    pub beta1: f32,
    /// Second-moment decay (0.999).
    pub beta2: f32,
    /// Denominator epsilon (1e-8).
    pub eps: f32,
    /// Decoupled weight decay on the cross-attention weights.
    pub weight_decay: f32,
}

/// Checks the sizes the kernels can handle.
pub(crate) fn check_dims(config: &ToyConfig) -> Result<(), ToyError> {
    let bad = |msg: String| Err(ToyError::Config(msg));
    let head_dim = config.d_model / config.heads.max(1);
    if !config.d_model.is_multiple_of(config.heads.max(1))
        || head_dim > MAX_HEAD_DIM
        || !head_dim.is_multiple_of(4)
    {
        return bad(format!(
            "d_model / heads must divide evenly, be a multiple of 4 and be at most \
             {MAX_HEAD_DIM}"
        ));
    }
    if !config.d_model.is_multiple_of(16) || config.d_model > 256 {
        return bad("d_model must be a multiple of 16 and at most 256".into());
    }
    if config.context > MAX_ATTENTION_LEN || config.context < 18 {
        return bad(format!(
            "context must be in 18..={MAX_ATTENTION_LEN} (two captioned images)"
        ));
    }
    let patch = config.patch as usize;
    if patch == 0 || !super::data::IMAGE_SIZE.is_multiple_of(patch) {
        return bad("patch must divide the image size 32".into());
    }
    let p = (super::data::IMAGE_SIZE / patch).pow(2) as u32;
    if p + config.latents > MAX_ATTENTION_LEN || p + 1 > MAX_ATTENTION_LEN {
        return bad(format!(
            "patches + latents must be at most {MAX_ATTENTION_LEN}"
        ));
    }
    if 2 * config.latents > MAX_ATTENTION_LEN {
        return bad("too many latents".into());
    }
    if config.batch < 2 || !config.batch.is_multiple_of(2) {
        return bad("batch must be even and at least 2".into());
    }
    if config.mlp_mult == 0 || config.mlp_mult * config.d_model > 512 {
        return bad("mlp_mult * d_model must be in 1..=512".into());
    }
    if config.lm_layers == 0
        || config.cross_attn_every == 0
        || config.cross_attn_every > config.lm_layers
    {
        return bad("cross_attn_every must be in 1..=lm_layers".into());
    }
    if config.perceiver_depth == 0 {
        return bad("perceiver_depth must be at least 1".into());
    }
    Ok(())
}
