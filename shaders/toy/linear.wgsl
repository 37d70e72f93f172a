// linear: y = epilogue(prologue(x) · W^T), or y = epilogue(x · W) with a
// transposed weight (the input gradient of a linear layer). Each workgroup
// owns `rows` whole rows, so row-wise work fuses in: a LayerNorm prologue,
// and epilogues for GELU, its derivative, a (tanh-gated) residual add, and
// the LayerNorm backward. Inputs: x, W, optional gamma/beta/stats/res/add;
// outputs: y and the saved tensors named below.

struct Params {
    x: RowMap,    // [m, k]  input rows
    y: RowMap,    // [m, n]  output rows
    aux: RowMap,  // [m, n]  gelu: pre-activation; residual: branch; ln backward: d(ln output)
    res: RowMap,  // [m, n]  residual added last (residual, ln backward)
    ln_x: RowMap, // LN prologue: [m, k] LN output saved; ln backward: [m, n] the LN input
    add: RowMap,  // [m, n]  ln backward: added to the product before the LN backward
    m: u32,
    n: u32,
    k: u32,
    rows: u32,      // rows per workgroup, <= MAX_ROWS, rows * k <= 4 * X_VEC4
    w_off: u32,     // W as [n, k] (w_t = 0) or [k, n] (w_t = 1)
    w_t: u32,
    pro: u32,
    epi: u32,
    gate_off: u32,  // tanh gate parameter or NONE
    gamma_off: u32, // LayerNorm weight [k] (prologue) or [n] (backward)
    beta_off: u32,  // LayerNorm bias
    stats_off: u32, // [m, 2] (mean, rstd)
    eps: f32,
    flags: u32,
    _pad0: u32,
    _pad1: u32,
}

const PRO_NONE: u32 = 0u;
const PRO_LN: u32 = 1u;
const PRO_GATE: u32 = 2u;
const EPI_STORE: u32 = 0u;
const EPI_GELU: u32 = 1u;
const EPI_GELU_BWD: u32 = 2u;
const EPI_RESIDUAL: u32 = 3u;
const EPI_LN_BWD: u32 = 4u;
const F_RES: u32 = 1u;
const F_ADD: u32 = 2u;
const F_ACCUM: u32 = 4u;
const F_AUX: u32 = 8u;
const F_LN_SAVE: u32 = 16u;
const MAX_ROWS: u32 = 32u;
const X_VEC4: u32 = 512u;

@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> sh_x: array<vec4<f32>, X_VEC4>;
var<workgroup> sh_a: array<f32, MAX_ROWS>;
var<workgroup> sh_b: array<f32, MAX_ROWS>;

fn has(flag: u32) -> bool {
    return (p.flags & flag) != 0u;
}

@compute @workgroup_size(WG)
fn linear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row0 = wg.x * p.rows;
    let rows = min(p.rows, p.m - row0);
    let k4 = p.k / 4u;
    let n4 = p.n / 4u;

    for (var i = lid; i < p.rows * k4; i += WG) {
        let r = i / k4;
        var v = vec4<f32>(0.0);
        if r < rows {
            v = mem4[row_at(p.x, row0 + r) / 4u + i % k4];
        }
        if p.pro == PRO_GATE {
            v *= gate_scale(p.gate_off);
        }
        sh_x[i] = v;
    }
    workgroupBarrier();

    if p.pro == PRO_LN {
        if lid < rows {
            var s = 0.0;
            for (var kk = 0u; kk < k4; kk++) {
                s += dot(sh_x[lid * k4 + kk], vec4<f32>(1.0));
            }
            let mean = s / f32(p.k);
            var q = 0.0;
            for (var kk = 0u; kk < k4; kk++) {
                let d = sh_x[lid * k4 + kk] - mean;
                q += dot(d, d);
            }
            // Biased variance, as torch.nn.LayerNorm.
            let rstd = inverseSqrt(q / f32(p.k) + p.eps);
            sh_a[lid] = mean;
            sh_b[lid] = rstd;
            mem[p.stats_off + 2u * (row0 + lid)] = mean;
            mem[p.stats_off + 2u * (row0 + lid) + 1u] = rstd;
        }
        workgroupBarrier();
        for (var i = lid; i < rows * k4; i += WG) {
            let r = i / k4;
            let kk = i % k4;
            let v = (sh_x[i] - sh_a[r]) * sh_b[r] * mem4[p.gamma_off / 4u + kk]
                + mem4[p.beta_off / 4u + kk];
            sh_x[i] = v;
            if has(F_LN_SAVE) {
                mem4[row_at(p.ln_x, row0 + r) / 4u + kk] = v;
            }
        }
        workgroupBarrier();
    }

    for (var item = lid; item < rows * n4; item += WG) {
        let r = item / n4;
        let c4 = item % n4;
        let xb = r * k4;
        var acc = vec4<f32>(0.0);
        if p.w_t == 0u {
            // Output columns 4*c4 .. 4*c4+3 are rows of W: four dot products.
            let w0 = p.w_off / 4u + 4u * c4 * k4;
            for (var kk = 0u; kk < k4; kk++) {
                let xv = sh_x[xb + kk];
                acc += vec4<f32>(
                    dot(xv, mem4[w0 + kk]),
                    dot(xv, mem4[w0 + k4 + kk]),
                    dot(xv, mem4[w0 + 2u * k4 + kk]),
                    dot(xv, mem4[w0 + 3u * k4 + kk]),
                );
            }
        } else {
            // W[kk, 4*c4 .. 4*c4+3] is one vec4; walk down four rows of W at a time.
            let w0 = p.w_off / 4u + c4;
            for (var kk = 0u; kk < k4; kk++) {
                let xv = sh_x[xb + kk];
                let wb = w0 + 4u * kk * n4;
                acc += xv.x * mem4[wb] + xv.y * mem4[wb + n4] + xv.z * mem4[wb + 2u * n4]
                    + xv.w * mem4[wb + 3u * n4];
            }
        }

        let gr = row0 + r;
        let yix = row_at(p.y, gr) / 4u + c4;
        switch p.epi {
            case EPI_GELU: {
                mem4[row_at(p.aux, gr) / 4u + c4] = acc;
                mem4[yix] = vec4<f32>(gelu(acc.x), gelu(acc.y), gelu(acc.z), gelu(acc.w));
            }
            case EPI_GELU_BWD: {
                let u = mem4[row_at(p.aux, gr) / 4u + c4];
                mem4[yix] = acc * vec4<f32>(gelu_grad(u.x), gelu_grad(u.y), gelu_grad(u.z),
                    gelu_grad(u.w));
            }
            case EPI_RESIDUAL: {
                if has(F_AUX) {
                    mem4[row_at(p.aux, gr) / 4u + c4] = acc;
                }
                mem4[yix] = mem4[row_at(p.res, gr) / 4u + c4] + gate_scale(p.gate_off) * acc;
            }
            case EPI_LN_BWD: {
                if has(F_ADD) {
                    acc += mem4[row_at(p.add, gr) / 4u + c4];
                }
                mem4[row_at(p.aux, gr) / 4u + c4] = acc;
            }
            default: {
                if has(F_ACCUM) {
                    acc += mem4[yix];
                }
                mem4[yix] = acc;
            }
        }
    }

    if p.epi != EPI_LN_BWD {
        return;
    }
    // LayerNorm backward: with g = dy * gamma and xh the normalised input,
    // dx = rstd * (g - mean(g) - xh * mean(g * xh)), row by row.
    storageBarrier();
    if lid < rows {
        let gr = row0 + lid;
        let mean = mem[p.stats_off + 2u * gr];
        let rstd = mem[p.stats_off + 2u * gr + 1u];
        var s1 = 0.0;
        var s2 = 0.0;
        for (var c4 = 0u; c4 < n4; c4++) {
            let g = mem4[row_at(p.aux, gr) / 4u + c4] * mem4[p.gamma_off / 4u + c4];
            let xh = (mem4[row_at(p.ln_x, gr) / 4u + c4] - mean) * rstd;
            s1 += dot(g, vec4<f32>(1.0));
            s2 += dot(g, xh);
        }
        sh_a[lid] = s1 / f32(p.n);
        sh_b[lid] = s2 / f32(p.n);
    }
    workgroupBarrier();
    for (var item = lid; item < rows * n4; item += WG) {
        let r = item / n4;
        let c4 = item % n4;
        let gr = row0 + r;
        let mean = mem[p.stats_off + 2u * gr];
        let rstd = mem[p.stats_off + 2u * gr + 1u];
        let g = mem4[row_at(p.aux, gr) / 4u + c4] * mem4[p.gamma_off / 4u + c4];
        let xh = (mem4[row_at(p.ln_x, gr) / 4u + c4] - mean) * rstd;
        var dx = rstd * (g - sh_a[r] - xh * sh_b[r]);
        if has(F_RES) {
            dx += mem4[row_at(p.res, gr) / 4u + c4];
        }
        mem4[row_at(p.y, gr) / 4u + c4] = dx;
    }
}
