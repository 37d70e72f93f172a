// Prelude of every toy kernel: the arena bindings, row addressing and the
// numerics (GELU, tanh) they share. Every f32 tensor of the model (weights,
// gradients, activations, optimizer state, image features) lives in one
// arena `mem`; kernels find their tensors through element offsets in their
// uniform block, so one bind group serves every dispatch.

const WG: u32 = 256u;
// Marks an absent tensor or table in a uniform block.
const NONE: u32 = 0xffffffffu;
// Most negative finite f32: masked attention logits, as OpenFlamingo (not -inf).
const F32_LOWEST: f32 = -3.4028234663852886e38;

// The arena is typed as vec4s, so a four-element load or store is one
// memory access: CPU drivers run every access of an invocation as a
// separate gather, so four scalar accesses cost about four times one vec4.
// Scalars are components of those vec4s; both forms address the same
// bytes, so kernels mix them freely.
@group(0) @binding(0) var<storage, read_write> mem: array<vec4<f32>>;  // [arena / 4]
// Per-step integer data: token ids, targets, text_time, image slots, lr bits.
@group(0) @binding(2) var<storage, read_write> ints: array<u32>;       // [batch words]

// Element `i` of the arena.
fn ld(i: u32) -> f32 {
    return mem[i / 4u][i % 4u];
}

fn st(i: u32, v: f32) {
    mem[i / 4u][i % 4u] = v;
}

// Elements 4i .. 4i + 3 of the arena.
fn ld4(i: u32) -> vec4<f32> {
    return mem[i];
}

fn st4(i: u32, v: vec4<f32>) {
    mem[i] = v;
}

// Row `r` of a logical [rows, width] tensor starts at
// off + (r / rpg) * gstride + (r % rpg) * rstride: rows come in groups of
// `rpg`, which lets a kernel read every image's latents from one parameter
// (gstride 0) or write into every 17th row of a token table.
struct RowMap {
    off: u32,
    gstride: u32,
    rpg: u32,
    rstride: u32,
}

fn row_at(map: RowMap, r: u32) -> u32 {
    // Dense maps skip the division: CPU drivers run vector integer
    // division one lane at a time.
    if map.rpg == NONE {
        return map.off + r * map.rstride;
    }
    return map.off + (r / map.rpg) * map.gstride + (r % map.rpg) * map.rstride;
}

// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): WGSL has no erf.
fn erf_approx(x: f32) -> f32 {
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return sign(x) * (1.0 - poly * exp(-ax * ax));
}

// Exact (erf) GELU, as torch.nn.GELU().
fn gelu(u: f32) -> f32 {
    return 0.5 * u * (1.0 + erf_approx(u * 0.70710678118654752));
}

// d gelu(u) / du = Phi(u) + u * phi(u).
fn gelu_grad(u: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_approx(u * 0.70710678118654752));
    return cdf + u * 0.39894228040143268 * exp(-0.5 * u * u);
}

// tanh that stays finite for large |x| (some backends overflow exp(2x)).
fn tanh_safe(x: f32) -> f32 {
    let c = clamp(x, -15.0, 15.0);
    let e = exp(2.0 * c);
    return (e - 1.0) / (e + 1.0);
}

// tanh of arena element `off`, a gate parameter,, or 1 when there is no gate.
fn gate_scale(off: u32) -> f32 {
    if off == NONE {
        return 1.0;
    }
    return tanh_safe(ld(off));
}
