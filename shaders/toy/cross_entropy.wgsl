// cross_entropy: per row, loss = logsumexp(logits) - logits[target], and
// dlogits = (softmax(logits) - onehot(target)) / n_valid: the gradient of
// the mean over valid rows. Rows whose target is NONE (padding, <image>)
// get loss 0 and gradient 0. One thread per row.

struct Params {
    logits_off: u32, // [m, vocab]
    m: u32,
    vocab: u32,
    tgt_off: u32,    // ints: [m] target ids or NONE
    valid_off: u32,  // ints: [1] number of valid rows
    loss_off: u32,   // [m]
    dlogits_off: u32, // [m, vocab]
    _pad0: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn cross_entropy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x;
    if r >= p.m {
        return;
    }
    let base = p.logits_off + r * p.vocab;
    let dbase = p.dlogits_off + r * p.vocab;
    let tgt = ints[p.tgt_off + r];
    if tgt >= p.vocab {
        st(p.loss_off + r, 0.0);
        for (var j = 0u; j < p.vocab; j++) {
            st(dbase + j, 0.0);
        }
        return;
    }
    var mx = F32_LOWEST;
    for (var j = 0u; j < p.vocab; j++) {
        mx = max(mx, ld(base + j));
    }
    var sum = 0.0;
    for (var j = 0u; j < p.vocab; j++) {
        sum += exp(ld(base + j) - mx);
    }
    st(p.loss_off + r, log(sum) + mx - ld(base + tgt));
    let inv_n = 1.0 / f32(max(ints[p.valid_off], 1u));
    for (var j = 0u; j < p.vocab; j++) {
        var g = exp(ld(base + j) - mx) / sum;
        if j == tgt {
            g -= 1.0;
        }
        st(dbase + j, g * inv_n);
    }
}
