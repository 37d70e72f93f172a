//! Every toy kernel, forward and backward, against an f64 CPU reference or
//! f64 finite differences, on small seeded random inputs whose sizes are
//! not multiples of the tile sizes. Runs on the adapter the environment
//! selects (the CPU Vulkan driver in CI); without one these tests fail.

mod toy_common;

use toy_common::*;
use wgpu_gradclip::toy::kernels::*;

fn tanh(x: f64) -> f64 {
    x.tanh()
}

/// Sizes of the matmul checks: rows that leave a tile (and a subgroup's
/// 32-row block) part-filled, and widths the subgroup kernel takes (n a
/// multiple of 16) and leaves to the portable one (24).
const LINEAR_SIZES: [(usize, usize, usize); 3] = [(13, 16, 24), (37, 16, 32), (45, 16, 48)];

#[test]
fn linear_forward_backward_and_epilogues_match_f64() {
    let g = gpu();
    for (m, k, n) in LINEAR_SIZES {
        check_linear(&g, m, k, n);
    }
}

#[test]
fn portable_linear_matches_f64_where_subgroups_would_run() {
    let g = gpu_portable();
    assert!(!g.kernels.uses_subgroups());
    for (m, k, n) in LINEAR_SIZES {
        check_linear(&g, m, k, n);
    }
}

/// lavapipe has 8-lane subgroups, so the trainer's matmuls and attention
/// must run on the subgroup kernels there; a change that silently fell
/// back to the portable ones would cost the toy about a fifth of its
/// Flamingo rate on the CI driver (13.8 against 17.5 steps/s in a full
/// default run).
#[test]
fn subgroup_kernels_run_on_lavapipe() {
    let g = gpu();
    let info = g.device.adapter_info();
    if info.name.contains("llvmpipe") && info.backend == wgpu::Backend::Vulkan {
        assert!(g.kernels.uses_subgroups(), "{info:?}");
    }
    if !g.device.features().contains(wgpu::Features::SUBGROUP) {
        assert!(!g.kernels.uses_subgroups());
    }
}

fn check_linear(g: &Gpu, m: usize, k: usize, n: usize) {
    let at = |what: &str| format!("{what} (m {m}, k {k}, n {n})");
    let x = randn(1, m * k, 1.0);
    let w = randn(2, n * k, 0.5);
    let dy = randn(3, m * n, 1.0);
    let res = randn(4, m * n, 1.0);
    let aux_in = randn(5, m * k, 1.5);
    let gate = [0.7f32];
    let mut a = Arena::default();
    let (xo, wo, dyo, reso, auxo, go) = (
        a.put(&x),
        a.put(&w),
        a.put(&dy),
        a.put(&res),
        a.put(&aux_in),
        a.put(&gate),
    );
    let y_store = a.zeros(m * n);
    let (y_gelu, u_gelu) = (a.zeros(m * n), a.zeros(m * n));
    let (y_res, branch) = (a.zeros(m * n), a.zeros(m * n));
    let dx = a.zeros(m * k);
    let dx_gelu = a.zeros(m * k);
    let acc_old = randn(6, m * n, 1.0);
    let y_acc = a.put(&acc_old);
    let dw = a.zeros(n * k);
    let dw_old = randn(7, n * k, 1.0);
    let dw_acc = a.put(&dw_old);
    // Outputs one element past a vec4 boundary take the scalar epilogue.
    let (y_odd, u_odd) = (a.zeros(m * n + 4) + 1, a.zeros(m * n + 4) + 1);
    let (mu, ku, nu) = (m as u32, k as u32, n as u32);
    let d = |off, w| RowMap::dense(off, w);

    let mut ops = vec![Dispatch::linear(LinearParams::new(
        mu,
        ku,
        nu,
        d(xo, ku),
        wo,
        d(y_store, nu),
    ))];
    let mut p = LinearParams::new(mu, ku, nu, d(xo, ku), wo, d(y_gelu, nu));
    p.epi = Epilogue::Gelu as u32;
    p.aux = d(u_gelu, nu);
    ops.push(Dispatch::linear(p));
    let mut p = LinearParams::new(mu, ku, nu, d(xo, ku), wo, d(y_odd, nu));
    p.epi = Epilogue::Gelu as u32;
    p.aux = d(u_odd, nu);
    ops.push(Dispatch::linear(p));
    let mut p = LinearParams::new(mu, ku, nu, d(xo, ku), wo, d(y_res, nu));
    p.epi = Epilogue::Residual as u32;
    p.res = d(reso, nu);
    p.gate_off = go;
    p.aux = d(branch, nu);
    p.flags = linear_flags::AUX;
    ops.push(Dispatch::linear(p));
    ops.push(Dispatch::linear(LinearParams::transposed(
        mu,
        nu,
        ku,
        d(dyo, nu),
        wo,
        d(dx, ku),
    )));
    let mut p = LinearParams::transposed(mu, nu, ku, d(dyo, nu), wo, d(dx_gelu, ku));
    p.epi = Epilogue::GeluBackward as u32;
    p.aux = d(auxo, ku);
    ops.push(Dispatch::linear(p));
    let mut p = LinearParams::new(mu, ku, nu, d(xo, ku), wo, d(y_acc, nu));
    p.pro = Prologue::Gate as u32;
    p.gate_off = go;
    p.add = d(reso, nu);
    p.flags = linear_flags::ADD | linear_flags::ACCUM;
    ops.push(Dispatch::linear(p));
    ops.push(Dispatch::linear_grad_weight(LinearGradWeightParams {
        dy: d(dyo, nu),
        x: d(xo, ku),
        m: mu,
        n: nu,
        k: ku,
        dw_off: dw,
        gate_off: go,
        accumulate: 0,
        _pad: [0; 2],
    }));
    ops.push(Dispatch::linear_grad_weight(LinearGradWeightParams {
        dy: d(dyo, nu),
        x: d(xo, ku),
        m: mu,
        n: nu,
        k: ku,
        dw_off: dw_acc,
        gate_off: go,
        accumulate: 1,
        _pad: [0; 2],
    }));
    let out = g.run(&a, &[], &ops);

    let (x64, w64, dy64) = (to64(&x), to64(&w), to64(&dy));
    let s = tanh(0.7);
    let mut u = vec![0f64; m * n];
    for r in 0..m {
        for c in 0..n {
            u[r * n + c] = (0..k).map(|i| x64[r * k + i] * w64[c * k + i]).sum();
        }
    }
    assert_close(&at("x W^T"), slice(&out, y_store, m * n), &u, 1e-5, 1e-5);
    assert_close(
        &at("gelu pre-activation"),
        slice(&out, u_gelu, m * n),
        &u,
        1e-5,
        1e-5,
    );
    let ge: Vec<f64> = u.iter().map(|&v| gelu(v)).collect();
    assert_close(&at("gelu"), slice(&out, y_gelu, m * n), &ge, 1e-5, 1e-6);
    assert_close(
        &at("unaligned gelu"),
        slice(&out, y_odd, m * n),
        &ge,
        1e-5,
        1e-6,
    );
    assert_close(
        &at("unaligned gelu pre-activation"),
        slice(&out, u_odd, m * n),
        &u,
        1e-5,
        1e-5,
    );
    let yr: Vec<f64> = (0..m * n).map(|i| f64::from(res[i]) + s * u[i]).collect();
    assert_close(
        &at("gated residual"),
        slice(&out, y_res, m * n),
        &yr,
        1e-5,
        1e-5,
    );
    assert_close(
        &at("gated residual branch"),
        slice(&out, branch, m * n),
        &u,
        1e-5,
        1e-5,
    );
    let ya: Vec<f64> = (0..m * n)
        .map(|i| s * u[i] + f64::from(res[i]) + f64::from(acc_old[i]))
        .collect();
    assert_close(
        &at("gate prologue + add + accumulate"),
        slice(&out, y_acc, m * n),
        &ya,
        1e-5,
        1e-5,
    );

    // The input gradient of sum(dy * (x W^T)) is dy W; check it by
    // finite differences of that f64 loss.
    let loss = |xs: &[f64]| -> f64 {
        let mut l = 0.0;
        for r in 0..m {
            for c in 0..n {
                l += dy64[r * n + c] * (0..k).map(|i| xs[r * k + i] * w64[c * k + i]).sum::<f64>();
            }
        }
        l
    };
    let want_dx = numeric_grad(&x64, loss);
    assert_close(
        &at("dx = dy W"),
        slice(&out, dx, m * k),
        &want_dx,
        1e-4,
        1e-5,
    );
    let h = 1e-6;
    let want_gelu_bwd: Vec<f64> = (0..m * k)
        .map(|i| {
            let a = f64::from(aux_in[i]);
            want_dx[i] * (gelu(a + h) - gelu(a - h)) / (2.0 * h)
        })
        .collect();
    assert_close(
        &at("dx * gelu'(u)"),
        slice(&out, dx_gelu, m * k),
        &want_gelu_bwd,
        1e-4,
        1e-5,
    );
    let want_dw = numeric_grad(&w64, |ws: &[f64]| {
        let mut l = 0.0;
        for r in 0..m {
            for c in 0..n {
                l += dy64[r * n + c] * (0..k).map(|i| x64[r * k + i] * ws[c * k + i]).sum::<f64>();
            }
        }
        s * l
    });
    assert_close(
        &at("dW = tanh(g) dy^T x"),
        slice(&out, dw, n * k),
        &want_dw,
        1e-4,
        1e-5,
    );
    let want_acc: Vec<f64> = want_dw
        .iter()
        .zip(&dw_old)
        .map(|(w, o)| w + f64::from(*o))
        .collect();
    assert_close(
        &at("dW accumulated"),
        slice(&out, dw_acc, n * k),
        &want_acc,
        1e-4,
        1e-5,
    );
}

#[test]
fn layer_norm_forward_backward_and_param_grads_match_finite_differences() {
    let g = gpu();
    let (m, n) = (11usize, 16usize);
    let x = randn(10, m * n, 2.0);
    let gamma = randn(11, n, 1.0);
    let beta = randn(12, n, 1.0);
    let dy = randn(13, m * n, 1.0);
    let res = randn(14, m * n, 1.0);
    let mut a = Arena::default();
    let (xo, go, bo, dyo, reso) = (
        a.put(&x),
        a.put(&gamma),
        a.put(&beta),
        a.put(&dy),
        a.put(&res),
    );
    let (y, stats, dx, dg, db) = (
        a.zeros(m * n),
        a.zeros(2 * m),
        a.zeros(m * n),
        a.zeros(n),
        a.zeros(n),
    );
    let (mu, nu) = (m as u32, n as u32);
    let d = |off| RowMap::dense(off, nu);
    let ops = [
        Dispatch::layer_norm(LayerNormParams {
            x: d(xo),
            y: d(y),
            m: mu,
            n: nu,
            gamma_off: go,
            beta_off: bo,
            stats_off: stats,
            eps: 1e-5,
            _pad: [0; 2],
        }),
        Dispatch::layer_norm_backward(LayerNormBackwardParams {
            dy: d(dyo),
            x: d(xo),
            dx: d(dx),
            res: d(reso),
            m: mu,
            n: nu,
            gamma_off: go,
            stats_off: stats,
        }),
        Dispatch::layer_norm_grad_params(LayerNormGradParams {
            dy: d(dyo),
            x: d(xo),
            m: mu,
            n: nu,
            stats_off: stats,
            dgamma_off: dg,
            dbeta_off: db,
            accumulate: 0,
            _pad: [0; 2],
        }),
    ];
    let out = g.run(&a, &[], &ops);
    let (x64, g64, b64, dy64) = (to64(&x), to64(&gamma), to64(&beta), to64(&dy));
    assert_close(
        "layer norm",
        slice(&out, y, m * n),
        &layer_norm(&x64, n, &g64, &b64),
        1e-5,
        1e-5,
    );
    let loss = |xs: &[f64], gs: &[f64], bs: &[f64]| -> f64 {
        layer_norm(xs, n, gs, bs)
            .iter()
            .zip(&dy64)
            .map(|(a, b)| a * b)
            .sum()
    };
    let mut want_dx = numeric_grad(&x64, |xs| loss(xs, &g64, &b64));
    for (w, r) in want_dx.iter_mut().zip(&res) {
        *w += f64::from(*r);
    }
    assert_close(
        "layer norm dx + residual",
        slice(&out, dx, m * n),
        &want_dx,
        1e-4,
        1e-4,
    );
    assert_close(
        "dgamma",
        slice(&out, dg, n),
        &numeric_grad(&g64, |gs| loss(&x64, gs, &b64)),
        1e-4,
        1e-4,
    );
    assert_close(
        "dbeta",
        slice(&out, db, n),
        &numeric_grad(&b64, |bs| loss(&x64, &g64, bs)),
        1e-4,
        1e-4,
    );
}

/// f64 attention over one head: q [tq, dh], k/v [tk, dh]; `allowed(t, j)`;
/// rows with `zero_row(t)` output 0.
#[allow(clippy::too_many_arguments)]
fn attention64(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    tq: usize,
    tk: usize,
    dh: usize,
    allowed: &dyn Fn(usize, usize) -> bool,
    zero_row: &dyn Fn(usize) -> bool,
) -> Vec<f64> {
    let scale = 1.0 / (dh as f64).sqrt();
    let mut o = vec![0.0; tq * dh];
    for t in 0..tq {
        if zero_row(t) {
            continue;
        }
        let s: Vec<f64> = (0..tk)
            .map(|j| {
                if allowed(t, j) {
                    (0..dh).map(|d| q[t * dh + d] * k[j * dh + d]).sum::<f64>() * scale
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|&x| (x - mx).exp()).collect();
        let z: f64 = e.iter().sum();
        for d in 0..dh {
            o[t * dh + d] = (0..tk).map(|j| e[j] / z * v[j * dh + d]).sum();
        }
    }
    o
}

struct AttnCase {
    name: &'static str,
    mask: AttentionMask,
    batch: usize,
    tq: usize,
    tk: usize,
    ints: Vec<u32>,
    len_off: u32,
    time_off: u32,
    slot_off: u32,
    media: usize,
    latents: usize,
    /// Key row (in [kv rows]) of key j of sequence b, or None.
    key_row: Box<dyn Fn(usize, usize) -> Option<usize>>,
    kv_rows: usize,
    allowed: Box<dyn Fn(usize, usize, usize) -> bool>,
    zero_row: Box<dyn Fn(usize, usize) -> bool>,
}

/// Checks `case` with the trainer's kernels and with the portable ones;
/// cases whose tq and tk are multiples of 8 run the subgroup kernels in the
/// first pass where the device has them.
fn check_attention(case: AttnCase) {
    check_attention_on(&gpu(), &case);
    check_attention_on(&gpu_portable(), &case);
}

fn check_attention_on(g: &Gpu, case: &AttnCase) {
    let (heads, dh) = (2usize, 8usize);
    let width = heads * dh;
    let (b, tq, tk) = (case.batch, case.tq, case.tk);
    let q = randn(20, b * tq * width, 1.0);
    let kv = randn(21, case.kv_rows * 2 * width, 1.0);
    let d_o = randn(22, b * tq * width, 1.0);
    let mut a = Arena::default();
    let (qo, kvo, doo) = (a.put(&q), a.put(&kv), a.put(&d_o));
    let (o, probs) = (a.zeros(b * tq * width), a.zeros(b * heads * tq * tk));
    let (dq, dkv) = (a.zeros(b * tq * width), a.zeros(case.kv_rows * 2 * width));
    let fwd = AttentionParams {
        q_off: qo,
        q_rs: width as u32,
        k_off: kvo,
        k_rs: 2 * width as u32,
        v_off: kvo + width as u32,
        v_rs: 2 * width as u32,
        o_off: o,
        o_rs: width as u32,
        p_off: probs,
        tq: tq as u32,
        tk: tk as u32,
        dh: dh as u32,
        heads: heads as u32,
        mode: case.mask as u32,
        scale: 1.0 / (dh as f32).sqrt(),
        len_off: case.len_off,
        time_off: case.time_off,
        slot_off: case.slot_off,
        media: case.media as u32,
        latents: case.latents as u32,
    };
    let bwd = AttentionBackwardParams::of(&fwd, doo, dq, dkv, dkv + width as u32);
    let ops = [
        Dispatch::attention(fwd, b as u32),
        Dispatch::attention_backward(bwd, b as u32),
    ];
    let out = g.run(&a, &case.ints, &ops);

    let forward = |qs: &[f64], kvs: &[f64]| -> Vec<f64> {
        let mut o = vec![0.0; b * tq * width];
        for bi in 0..b {
            for h in 0..heads {
                let qh: Vec<f64> = (0..tq * dh)
                    .map(|i| qs[(bi * tq + i / dh) * width + h * dh + i % dh])
                    .collect();
                let row = |j: usize, base: usize| -> Vec<f64> {
                    match (case.key_row)(bi, j) {
                        Some(r) => (0..dh)
                            .map(|d| kvs[r * 2 * width + base + h * dh + d])
                            .collect(),
                        None => vec![0.0; dh],
                    }
                };
                let kh: Vec<f64> = (0..tk).flat_map(|j| row(j, 0)).collect();
                let vh: Vec<f64> = (0..tk).flat_map(|j| row(j, width)).collect();
                let oh = attention64(
                    &qh,
                    &kh,
                    &vh,
                    tq,
                    tk,
                    dh,
                    &|t, j| (case.allowed)(bi, t, j),
                    &|t| (case.zero_row)(bi, t),
                );
                for i in 0..tq * dh {
                    o[(bi * tq + i / dh) * width + h * dh + i % dh] = oh[i];
                }
            }
        }
        o
    };
    let (q64, kv64, do64) = (to64(&q), to64(&kv), to64(&d_o));
    assert_close(
        &format!("{} output", case.name),
        slice(&out, o, b * tq * width),
        &forward(&q64, &kv64),
        1e-5,
        1e-5,
    );
    let loss = |qs: &[f64], kvs: &[f64]| {
        forward(qs, kvs)
            .iter()
            .zip(&do64)
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    assert_close(
        &format!("{} dq", case.name),
        slice(&out, dq, b * tq * width),
        &numeric_grad(&q64, |qs| loss(qs, &kv64)),
        1e-4,
        1e-5,
    );
    // Only key rows some sequence uses get a gradient written.
    let want_dkv = numeric_grad(&kv64, |kvs| loss(&q64, kvs));
    assert_close(
        &format!("{} dk dv", case.name),
        slice(&out, dkv, case.kv_rows * 2 * width),
        &want_dkv,
        1e-4,
        1e-5,
    );
}

/// Two sequences of `tq` queries over `tk` keys, unmasked.
fn unmasked_case(name: &'static str, tq: usize, tk: usize) -> AttnCase {
    let b = 2;
    AttnCase {
        name,
        mask: AttentionMask::None,
        batch: b,
        tq,
        tk,
        ints: vec![],
        len_off: NONE,
        time_off: NONE,
        slot_off: NONE,
        media: 0,
        latents: 0,
        key_row: Box::new(move |bi, j| Some(bi * tk + j)),
        kv_rows: b * tk,
        allowed: Box::new(|_, _, _| true),
        zero_row: Box::new(|_, _| false),
    }
}

/// Two causal sequences of `t` tokens, padded after `lens[b]`.
fn causal_case(name: &'static str, t: usize, lens: [u32; 2]) -> AttnCase {
    let b = 2;
    AttnCase {
        name,
        mask: AttentionMask::Causal,
        batch: b,
        tq: t,
        tk: t,
        ints: lens.to_vec(),
        len_off: 0,
        time_off: NONE,
        slot_off: NONE,
        media: 0,
        latents: 0,
        key_row: Box::new(move |bi, j| Some(bi * t + j)),
        kv_rows: b * t,
        allowed: Box::new(move |bi, t, j| j <= t && (j as u32) < lens[bi]),
        zero_row: Box::new(|_, _| false),
    }
}

#[test]
fn attention_without_mask_matches_finite_differences() {
    check_attention(unmasked_case("perceiver attention", 3, 5));
}

#[test]
fn causal_attention_with_padding_matches_finite_differences() {
    check_attention(causal_case("causal attention", 6, [6, 4]));
}

/// Two sequences of `tq` text tokens with `time[b][t]` as text_time, over
/// images of `latents` latents each: sequence 0 has images in slots 0 and
/// 1, sequence 1 one image in slot 2.
fn media_case(name: &'static str, latents: usize, time: [Vec<u32>; 2]) -> AttnCase {
    let (ni, l, tq) = (2, latents, time[0].len());
    let slots = [[0u32, 1], [2, NONE]];
    let mut ints: Vec<u32> = time.iter().flatten().copied().collect();
    let slot_off = ints.len() as u32;
    ints.extend(slots.iter().flatten());
    let (time_a, time_z) = (time.clone(), time);
    AttnCase {
        name,
        mask: AttentionMask::Media,
        batch: 2,
        tq,
        tk: ni * l,
        ints,
        len_off: NONE,
        time_off: 0,
        slot_off,
        media: ni,
        latents: l,
        key_row: Box::new(move |bi, j| {
            let s = slots[bi][j / l];
            (s != NONE).then(|| s as usize * l + j % l)
        }),
        kv_rows: 3 * l,
        allowed: Box::new(move |bi, t, j| {
            time_a[bi][t] as usize == j / l + 1 && slots[bi][j / l] != NONE
        }),
        zero_row: Box::new(move |bi, t| time_z[bi][t] == 0),
    }
}

#[test]
fn media_masked_cross_attention_matches_finite_differences() {
    check_attention(media_case(
        "media cross-attention",
        3,
        [vec![0, 1, 1, 1, 2, 2, 2], vec![0, 0, 1, 1, 1, 1, 1]],
    ));
}

/// Sizes the attention subgroup kernels take (tq and tk multiples of 8),
/// for each mask.
#[test]
fn attention_in_whole_subgroups_matches_finite_differences() {
    check_attention(unmasked_case("perceiver attention, 8 x 16", 8, 16));
    check_attention(causal_case("causal attention, 16", 16, [16, 11]));
    check_attention(media_case(
        "media cross-attention, 8 x 8",
        4,
        [vec![0, 1, 1, 1, 2, 2, 2, 2], vec![0, 0, 1, 1, 1, 1, 1, 1]],
    ));
}

#[test]
fn tanh_gate_gradient_matches_f64() {
    let g = gpu();
    let (m, n) = (9usize, 12usize);
    let dy = randn(30, m * n, 1.0);
    let f = randn(31, m * n, 1.0);
    let mut a = Arena::default();
    let (dyo, fo, go, gg) = (a.put(&dy), a.put(&f), a.put(&[-0.4]), a.zeros(1));
    let ops = [Dispatch::gate_backward(GateBackwardParams {
        dy: RowMap::dense(dyo, n as u32),
        f: RowMap::dense(fo, n as u32),
        m: m as u32,
        n: n as u32,
        gate_off: go,
        grad_off: gg,
    })];
    let out = g.run(&a, &[], &ops);
    let sum: f64 = dy
        .iter()
        .zip(&f)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    let gate = f64::from(-0.4f32);
    let h = 1e-6;
    let want = sum * ((gate + h).tanh() - (gate - h).tanh()) / (2.0 * h);
    assert_close("gate gradient", slice(&out, gg, 1), &[want], 1e-5, 1e-6);
}

#[test]
fn embedding_gather_and_masked_scatter_match_cpu() {
    let g = gpu();
    let (vocab, n, t, m) = (8usize, 12usize, 5usize, 10usize);
    let tokens: Vec<u32> = vec![2, 5, 3, 2, 7, 1, 2, 3, 3, 0];
    let wte = randn(40, vocab * n, 1.0);
    let wpe = randn(41, t * n, 1.0);
    let dx = randn(42, m * n, 1.0);
    let mut a = Arena::default();
    let (wteo, wpeo, dxo) = (a.put(&wte), a.put(&wpe), a.put(&dx));
    let (x, dw_masked, dw_all) = (
        a.zeros(m * n),
        a.put(&vec![9.0; vocab * n]),
        a.zeros(vocab * n),
    );
    let bwd = |dwte_off, all: bool| EmbeddingBackwardParams {
        tok_off: 0,
        m: m as u32,
        n: n as u32,
        dx_off: dxo,
        dwte_off,
        all_rows: u32::from(all),
        n_allowed: if all { 0 } else { 2 },
        _pad: 0,
        allowed: [2, 3, 0, 0],
    };
    let ops = [
        Dispatch::embedding(EmbeddingParams {
            tok_off: 0,
            m: m as u32,
            n: n as u32,
            t: t as u32,
            wte_off: wteo,
            wpe_off: wpeo,
            x_off: x,
            vocab: vocab as u32,
        }),
        Dispatch::embedding_backward(bwd(dw_masked, false), vocab as u32),
        Dispatch::embedding_backward(bwd(dw_all, true), vocab as u32),
    ];
    let out = g.run(&a, &tokens, &ops);
    let want_x: Vec<f64> = (0..m * n)
        .map(|i| {
            f64::from(wte[tokens[i / n] as usize * n + i % n])
                + f64::from(wpe[(i / n % t) * n + i % n])
        })
        .collect();
    assert_close("embedding", slice(&out, x, m * n), &want_x, 1e-6, 1e-6);
    let scatter = |allowed: &dyn Fn(u32) -> bool| -> Vec<f64> {
        let mut w = vec![0.0; vocab * n];
        for r in 0..m {
            if allowed(tokens[r]) {
                for c in 0..n {
                    w[tokens[r] as usize * n + c] += f64::from(dx[r * n + c]);
                }
            }
        }
        w
    };
    // Masked rows come out exactly 0, whatever was there before.
    assert_close(
        "masked scatter",
        slice(&out, dw_masked, vocab * n),
        &scatter(&|v| v == 2 || v == 3),
        1e-6,
        0.0,
    );
    assert_close(
        "full scatter",
        slice(&out, dw_all, vocab * n),
        &scatter(&|_| true),
        1e-6,
        1e-6,
    );
}

#[test]
fn cross_entropy_with_ignored_rows_matches_finite_differences() {
    let g = gpu();
    let (m, v) = (7usize, 12usize);
    let logits = randn(50, m * v, 2.0);
    let targets: Vec<u32> = vec![3, NONE, 11, 0, NONE, 5, 7];
    let valid = targets.iter().filter(|&&t| t != NONE).count() as u32;
    let mut ints = targets.clone();
    ints.push(valid);
    let mut a = Arena::default();
    let lo = a.put(&logits);
    let (loss, dl) = (a.zeros(m), a.zeros(m * v));
    let ops = [Dispatch::cross_entropy(CrossEntropyParams {
        logits_off: lo,
        m: m as u32,
        vocab: v as u32,
        tgt_off: 0,
        valid_off: m as u32,
        loss_off: loss,
        dlogits_off: dl,
        _pad: 0,
    })];
    let out = g.run(&a, &ints, &ops);
    let row_loss = |ls: &[f64], r: usize| -> f64 {
        if targets[r] == NONE {
            return 0.0;
        }
        let row = &ls[r * v..(r + 1) * v];
        let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        row.iter().map(|x| (x - mx).exp()).sum::<f64>().ln() + mx - row[targets[r] as usize]
    };
    let l64 = to64(&logits);
    let want: Vec<f64> = (0..m).map(|r| row_loss(&l64, r)).collect();
    assert_close("per-row loss", slice(&out, loss, m), &want, 1e-5, 1e-6);
    let mean = |ls: &[f64]| (0..m).map(|r| row_loss(ls, r)).sum::<f64>() / f64::from(valid);
    assert_close(
        "dlogits",
        slice(&out, dl, m * v),
        &numeric_grad(&l64, mean),
        1e-4,
        1e-6,
    );
}

#[test]
fn adamw_matches_f64_over_three_steps() {
    let g = gpu();
    let n = 37usize;
    let p0 = randn(60, n, 1.0);
    let grads: Vec<Vec<f32>> = (0..3).map(|s| randn(61 + s, n, 0.1)).collect();
    let (b1, b2, eps, wd, lr, decay_from) = (0.9f32, 0.999f32, 1e-8f32, 0.1f32, 0.01f32, 20u32);
    let mut a = Arena::default();
    let po = a.put(&p0);
    let go = a.zeros(n);
    let (mo, vo) = (a.zeros(n), a.zeros(n));
    let params = AdamWParams {
        n: n as u32,
        p_off: po,
        g_off: go,
        m_off: mo,
        v_off: vo,
        decay_from,
        step_off: 0,
        _pad: 0,
        beta1: b1,
        beta2: b2,
        eps,
        weight_decay: wd,
    };
    let mut mem = a.data.clone();
    for (t, gr) in grads.iter().enumerate() {
        mem[go as usize..go as usize + n].copy_from_slice(gr);
        let step = t as i32 + 1;
        let ints = [
            lr.to_bits(),
            (1.0 - b1.powi(step)).to_bits(),
            (1.0 - b2.powi(step)).to_bits(),
        ];
        mem = g.run(&Arena { data: mem }, &ints, &[Dispatch::adamw(params)]);
    }
    let (mut p, mut m, mut v) = (to64(&p0), vec![0.0; n], vec![0.0; n]);
    let (b1, b2, eps, wd, lr) = (
        f64::from(b1),
        f64::from(b2),
        f64::from(eps),
        f64::from(wd),
        f64::from(lr),
    );
    for (t, gr) in grads.iter().enumerate() {
        for i in 0..n {
            let gi = f64::from(gr[i]);
            if i as u32 >= decay_from {
                p[i] *= 1.0 - lr * wd;
            }
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mh = m[i] / (1.0 - b1.powi(t as i32 + 1));
            let vh = v[i] / (1.0 - b2.powi(t as i32 + 1));
            p[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
    assert_close("AdamW parameters", slice(&mem, po, n), &p, 1e-5, 1e-6);
}

/// The f64 reference's erf, which the GELU checks trust, against the C
/// library's erf, including the tails where a plain series would lose
/// every digit (at x = 5 its terms reach 1e9 before they cancel). The
/// series keeps about 14 digits just below 2, where it hands over.
#[test]
fn reference_erf_is_exact_in_the_tails() {
    let cases = [
        (0.5, 0.5204998778130465),
        (1.5, 0.9661051464753108),
        (1.99, 0.995111413199617),
        (2.0, 0.9953222650189527),
        (3.0, 0.9999779095030014),
        (5.0, 0.9999999999984626),
        (7.0, 1.0),
    ];
    for (x, want) in cases {
        for (sx, want) in [(x, want), (-x, -want)] {
            let got = erf(sx);
            assert!(
                (got - want).abs() <= 1e-14,
                "erf({sx}) = {got}, expected {want}"
            );
        }
    }
}
