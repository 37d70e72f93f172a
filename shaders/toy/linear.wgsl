// linear: y = epilogue(x · W^T), or y = epilogue(x · W) with a transposed
// weight (the input gradient of a linear layer). Each invocation owns an
// 8 x 8 tile of y held in 16 vec4 registers: per 4 steps of k it loads 8 x
// vectors and 8 weight vectors and does 256 multiply-adds, because memory
// loads, not arithmetic, bound CPU drivers (no private arrays either: they
// would live in memory, and no workgroup barrier: with one, the same
// product ran several times slower on the CPU Vulkan driver). Epilogues
// fuse GELU, its derivative, a (tanh-gated) residual add, or adding a
// second tensor; which one is fixed per pipeline (see the overrides).

struct Params {
    x: RowMap,    // [m, k]  input rows
    y: RowMap,    // [m, n]  output rows
    aux: RowMap,  // [m, n]  gelu: pre-activation; residual: branch
    res: RowMap,  // [m, n]  residual: added to the (gated) product
    ln_x: RowMap, // unused
    add: RowMap,  // [m, n]  store: added to the product
    m: u32,
    n: u32,       // a multiple of 8
    k: u32,       // a multiple of 4
    rows: u32,    // unused
    w_off: u32,   // W as [n, k] (W_T = 0) or [k, n] (W_T = 1)
    w_t: u32,     // = W_T; the overrides below are what the kernel reads
    pro: u32,     // = PRO
    epi: u32,     // = EPI
    gate_off: u32,  // tanh gate parameter or NONE
    gamma_off: u32, // unused
    beta_off: u32,  // unused
    stats_off: u32, // unused
    eps: f32,
    flags: u32,   // = FLAGS
    _pad0: u32,
    _pad1: u32,
}

const PRO_GATE: u32 = 2u;
const EPI_GELU: u32 = 1u;
const EPI_GELU_BWD: u32 = 2u;
const EPI_RESIDUAL: u32 = 3u;
const F_ADD: u32 = 2u;
const F_ACCUM: u32 = 4u;
const F_AUX: u32 = 8u;
const F_VEC4: u32 = 16u;
const LWG: u32 = 64u;
const TILE: u32 = 8u;

// The mode of a pipeline is fixed when it is built, as override constants
// mirroring w_t, pro, epi and flags: CPU drivers execute both sides of a
// branch they cannot prove uniform, so a switch on a uniform-buffer field
// paid for every epilogue. Constant branches are removed at compile time.
override W_T: u32 = 0u;
override PRO: u32 = 0u;
override EPI: u32 = 0u;
override FLAGS: u32 = 0u;

@group(1) @binding(0) var<uniform> p: Params;

fn has(flag: u32) -> bool {
    return (FLAGS & flag) != 0u;
}

// Column c of row r, one scalar at a time: for tensors that are not
// vec4-aligned.
fn epilogue1(r: u32, c: u32, v: f32, gate: f32) {
    let yix = row_at(p.y, r) + c;
    switch EPI {
        case EPI_GELU: {
            st(row_at(p.aux, r) + c, v);
            st(yix, gelu(v));
        }
        case EPI_GELU_BWD: {
            st(yix, v * gelu_grad(ld(row_at(p.aux, r) + c)));
        }
        case EPI_RESIDUAL: {
            if has(F_AUX) {
                st(row_at(p.aux, r) + c, v);
            }
            st(yix, ld(row_at(p.res, r) + c) + gate * v);
        }
        default: {
            var out = v;
            if has(F_ADD) {
                out += ld(row_at(p.add, r) + c);
            }
            if has(F_ACCUM) {
                out += ld(yix);
            }
            st(yix, out);
        }
    }
}

// Columns c..c+3 of row r, as one vec4 per tensor: the fast path, taken
// when every output-side tensor is vec4-aligned (F_VEC4). Scalar stores
// into the vec4 arena cost a load and a store of the whole vec4 each on
// CPU drivers, which made the scalar epilogue most of the kernel's time.
fn epilogue4(r: u32, c: u32, v: vec4<f32>, gate: f32) {
    let yix = (row_at(p.y, r) + c) / 4u;
    switch EPI {
        case EPI_GELU: {
            st4((row_at(p.aux, r) + c) / 4u, v);
            st4(yix, vec4<f32>(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w)));
        }
        case EPI_GELU_BWD: {
            let u = ld4((row_at(p.aux, r) + c) / 4u);
            st4(yix, v * vec4<f32>(gelu_grad(u.x), gelu_grad(u.y), gelu_grad(u.z),
                gelu_grad(u.w)));
        }
        case EPI_RESIDUAL: {
            if has(F_AUX) {
                st4((row_at(p.aux, r) + c) / 4u, v);
            }
            st4(yix, ld4((row_at(p.res, r) + c) / 4u) + gate * v);
        }
        default: {
            var out = v;
            if has(F_ADD) {
                out += ld4((row_at(p.add, r) + c) / 4u);
            }
            if has(F_ACCUM) {
                out += ld4(yix);
            }
            st4(yix, out);
        }
    }
}

// The factor on the product: tanh(gate) for a gated branch, else 1.
fn prologue_scale() -> f32 {
    if PRO == PRO_GATE {
        return gate_scale(p.gate_off);
    }
    return 1.0;
}

// The gate on the branch of a residual epilogue, else 1.
fn residual_gate() -> f32 {
    if EPI == EPI_RESIDUAL {
        return gate_scale(p.gate_off);
    }
    return 1.0;
}

// Row r, columns c0..c0+7 of the output.
fn epilogue(r: u32, c0: u32, lo: vec4<f32>, hi: vec4<f32>, gate: f32) {
    if r >= p.m {
        return;
    }
    if has(F_VEC4) {
        epilogue4(r, c0, lo, gate);
        epilogue4(r, c0 + 4u, hi, gate);
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        epilogue1(r, c0 + j, lo[j], gate);
        epilogue1(r, c0 + 4u + j, hi[j], gate);
    }
}

@compute @workgroup_size(LWG)
fn linear(@builtin(global_invocation_id) gid: vec3<u32>) {
    let nt = p.n / TILE;
    let row0 = (gid.x / nt) * TILE;
    let col0 = (gid.x % nt) * TILE;
    if row0 >= p.m {
        return;
    }
    let last = p.m - 1u;
    // Rows past m repeat the last row; their results are not stored.
    let o0 = row_at(p.x, min(row0 + 0u, last)) / 4u;
    let o1 = row_at(p.x, min(row0 + 1u, last)) / 4u;
    let o2 = row_at(p.x, min(row0 + 2u, last)) / 4u;
    let o3 = row_at(p.x, min(row0 + 3u, last)) / 4u;
    let o4 = row_at(p.x, min(row0 + 4u, last)) / 4u;
    let o5 = row_at(p.x, min(row0 + 5u, last)) / 4u;
    let o6 = row_at(p.x, min(row0 + 6u, last)) / 4u;
    let o7 = row_at(p.x, min(row0 + 7u, last)) / 4u;
    var a0l = vec4<f32>(0.0);
    var a0h = vec4<f32>(0.0);
    var a1l = vec4<f32>(0.0);
    var a1h = vec4<f32>(0.0);
    var a2l = vec4<f32>(0.0);
    var a2h = vec4<f32>(0.0);
    var a3l = vec4<f32>(0.0);
    var a3h = vec4<f32>(0.0);
    var a4l = vec4<f32>(0.0);
    var a4h = vec4<f32>(0.0);
    var a5l = vec4<f32>(0.0);
    var a5h = vec4<f32>(0.0);
    var a6l = vec4<f32>(0.0);
    var a6h = vec4<f32>(0.0);
    var a7l = vec4<f32>(0.0);
    var a7h = vec4<f32>(0.0);
    let k4 = p.k / 4u;
    if W_T == 0u {
        // Columns of wl/wh are weight rows col0..col0+7, four k at a time.
        let wb = (p.w_off + col0 * p.k) / 4u;
        for (var kk = 0u; kk < k4; kk++) {
            let wl = mat4x4<f32>(ld4(wb + kk), ld4(wb + k4 + kk), ld4(wb + 2u * k4 + kk),
                ld4(wb + 3u * k4 + kk));
            let wh = mat4x4<f32>(ld4(wb + 4u * k4 + kk), ld4(wb + 5u * k4 + kk),
                ld4(wb + 6u * k4 + kk), ld4(wb + 7u * k4 + kk));
            let x0 = ld4(o0 + kk);
            a0l += x0 * wl;
            a0h += x0 * wh;
            let x1 = ld4(o1 + kk);
            a1l += x1 * wl;
            a1h += x1 * wh;
            let x2 = ld4(o2 + kk);
            a2l += x2 * wl;
            a2h += x2 * wh;
            let x3 = ld4(o3 + kk);
            a3l += x3 * wl;
            a3h += x3 * wh;
            let x4 = ld4(o4 + kk);
            a4l += x4 * wl;
            a4h += x4 * wh;
            let x5 = ld4(o5 + kk);
            a5l += x5 * wl;
            a5h += x5 * wh;
            let x6 = ld4(o6 + kk);
            a6l += x6 * wl;
            a6h += x6 * wh;
            let x7 = ld4(o7 + kk);
            a7l += x7 * wl;
            a7h += x7 * wh;
        }
    } else {
        // Columns of ml/mh are weight rows 4kk..4kk+3 at columns col0..col0+7.
        let n4 = p.n / 4u;
        let wb = (p.w_off + col0) / 4u;
        for (var kk = 0u; kk < k4; kk++) {
            let b = wb + 4u * kk * n4;
            let ml = mat4x4<f32>(ld4(b), ld4(b + n4), ld4(b + 2u * n4), ld4(b + 3u * n4));
            let mh = mat4x4<f32>(ld4(b + 1u), ld4(b + n4 + 1u), ld4(b + 2u * n4 + 1u),
                ld4(b + 3u * n4 + 1u));
            let x0 = ld4(o0 + kk);
            a0l += ml * x0;
            a0h += mh * x0;
            let x1 = ld4(o1 + kk);
            a1l += ml * x1;
            a1h += mh * x1;
            let x2 = ld4(o2 + kk);
            a2l += ml * x2;
            a2h += mh * x2;
            let x3 = ld4(o3 + kk);
            a3l += ml * x3;
            a3h += mh * x3;
            let x4 = ld4(o4 + kk);
            a4l += ml * x4;
            a4h += mh * x4;
            let x5 = ld4(o5 + kk);
            a5l += ml * x5;
            a5h += mh * x5;
            let x6 = ld4(o6 + kk);
            a6l += ml * x6;
            a6h += mh * x6;
            let x7 = ld4(o7 + kk);
            a7l += ml * x7;
            a7h += mh * x7;
        }
    }
    let s = prologue_scale();
    let gate = residual_gate();
    epilogue(row0 + 0u, col0, a0l * s, a0h * s, gate);
    epilogue(row0 + 1u, col0, a1l * s, a1h * s, gate);
    epilogue(row0 + 2u, col0, a2l * s, a2h * s, gate);
    epilogue(row0 + 3u, col0, a3l * s, a3h * s, gate);
    epilogue(row0 + 4u, col0, a4l * s, a4h * s, gate);
    epilogue(row0 + 5u, col0, a5l * s, a5h * s, gate);
    epilogue(row0 + 6u, col0, a6l * s, a6h * s, gate);
    epilogue(row0 + 7u, col0, a7l * s, a7h * s, gate);
}
