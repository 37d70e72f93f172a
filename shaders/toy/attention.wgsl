// attention: softmax(q k^T * scale + mask) v for one (sequence, head) per
// workgroup, saving the probabilities for the backward pass. Three masks:
// none (Perceiver latents over media and latents), causal with key padding
// (language model), and OpenFlamingo's immediate-media mask (text token t
// sees only the latents of image number text_time[t]; with text_time 0 it
// sees nothing and its output is 0).

struct Params {
    q_off: u32,   // [b, tq, q_rs], head h at columns h * dh
    q_rs: u32,
    k_off: u32,   // [b, tk, k_rs] or, for media, [slots, latents, k_rs]
    k_rs: u32,
    v_off: u32,   // laid out as k
    v_rs: u32,
    o_off: u32,   // [b, tq, o_rs]
    o_rs: u32,
    p_off: u32,   // [b, heads, tq, tk] probabilities
    tq: u32,
    tk: u32,
    dh: u32,
    heads: u32,
    mode: u32,
    scale: f32,
    len_off: u32,  // ints: [b] sequence lengths (causal mode)
    time_off: u32, // ints: [b, tq] text_time (media mode)
    slot_off: u32, // ints: [b, media] image slot per image, NONE if absent (media mode)
    media: u32,    // images per sequence (media mode)
    latents: u32,  // latents per image (media mode)
}

const MODE_NONE: u32 = 0u;
const MODE_CAUSAL: u32 = 1u;
const MODE_MEDIA: u32 = 2u;
const MAX_T: u32 = 32u;
const MAX_DH: u32 = 16u;

@group(1) @binding(0) var<uniform> p: Params;

var<workgroup> sh_q: array<f32, 512>; // [MAX_T, MAX_DH]
var<workgroup> sh_k: array<f32, 512>;
var<workgroup> sh_v: array<f32, 512>;
var<workgroup> sh_p: array<f32, 1024>; // [MAX_T, MAX_T]

// Element offset of key/value row j of sequence b (NONE when the media
// slot is empty).
fn key_row(off: u32, rs: u32, b: u32, j: u32) -> u32 {
    if p.mode == MODE_MEDIA {
        let slot = ints[p.slot_off + b * p.media + j / p.latents];
        if slot == NONE {
            return NONE;
        }
        return off + (slot * p.latents + j % p.latents) * rs;
    }
    return off + (b * p.tk + j) * rs;
}

fn allowed(b: u32, t: u32, j: u32) -> bool {
    switch p.mode {
        case MODE_CAUSAL: {
            return j <= t && j < ints[p.len_off + b];
        }
        case MODE_MEDIA: {
            return ints[p.time_off + b * p.tq + t] == j / p.latents + 1u
                && ints[p.slot_off + b * p.media + j / p.latents] != NONE;
        }
        default: {
            return true;
        }
    }
}

@compute @workgroup_size(WG)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wg.x;
    let h = wg.y;
    let hc = h * p.dh;
    for (var i = lid; i < p.tq * p.dh; i += WG) {
        let t = i / p.dh;
        sh_q[i] = mem[p.q_off + (b * p.tq + t) * p.q_rs + hc + i % p.dh];
    }
    for (var i = lid; i < p.tk * p.dh; i += WG) {
        let j = i / p.dh;
        let kr = key_row(p.k_off, p.k_rs, b, j);
        let vr = key_row(p.v_off, p.v_rs, b, j);
        var kv = 0.0;
        var vv = 0.0;
        if kr != NONE {
            kv = mem[kr + hc + i % p.dh];
            vv = mem[vr + hc + i % p.dh];
        }
        sh_k[i] = kv;
        sh_v[i] = vv;
    }
    workgroupBarrier();

    for (var i = lid; i < p.tq * p.tk; i += WG) {
        let t = i / p.tk;
        let j = i % p.tk;
        var s = F32_LOWEST;
        if allowed(b, t, j) {
            var acc = 0.0;
            for (var d = 0u; d < p.dh; d++) {
                acc += sh_q[t * p.dh + d] * sh_k[j * p.dh + d];
            }
            s = acc * p.scale;
        }
        sh_p[i] = s;
    }
    workgroupBarrier();

    if lid < p.tq {
        let t = lid;
        let row = t * p.tk;
        var mx = F32_LOWEST;
        for (var j = 0u; j < p.tk; j++) {
            mx = max(mx, sh_p[row + j]);
        }
        var sum = 0.0;
        for (var j = 0u; j < p.tk; j++) {
            let e = exp(sh_p[row + j] - mx);
            sh_p[row + j] = e;
            sum += e;
        }
        var inv = 1.0 / sum;
        if p.mode == MODE_MEDIA && ints[p.time_off + b * p.tq + t] == 0u {
            // No image before this token: OpenFlamingo zeroes its attention.
            inv = 0.0;
        }
        for (var j = 0u; j < p.tk; j++) {
            sh_p[row + j] *= inv;
        }
    }
    workgroupBarrier();

    let p_base = p.p_off + (b * p.heads + h) * p.tq * p.tk;
    for (var i = lid; i < p.tq * p.tk; i += WG) {
        mem[p_base + i] = sh_p[i];
    }
    for (var i = lid; i < p.tq * p.dh; i += WG) {
        let t = i / p.dh;
        let d = i % p.dh;
        var acc = 0.0;
        for (var j = 0u; j < p.tk; j++) {
            acc += sh_p[t * p.tk + j] * sh_v[j * p.dh + d];
        }
        mem[p.o_off + (b * p.tq + t) * p.o_rs + hc + d] = acc;
    }
}
