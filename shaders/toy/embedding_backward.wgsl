// embedding_backward: the token embedding gradient with a row mask,
// dwte[v, c] = sum of dx[r, c] over positions r holding token v, for the
// rows the mask lets through, and 0 for every other row (OpenFlamingo
// trains only the <image> and <|endofchunk|> rows). One workgroup per vocab
// row; positions are summed in order, so the result is deterministic.

struct Params {
    tok_off: u32,  // ints: [m] token ids
    m: u32,
    n: u32,
    dx_off: u32,   // [m, n]
    dwte_off: u32, // [vocab, n]
    all_rows: u32, // 1: no mask (text pretraining)
    n_allowed: u32,
    _pad0: u32,
    allowed: vec4<u32>, // up to 4 trainable row ids
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn embedding_backward(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let v = wg.x;
    var open = p.all_rows != 0u;
    for (var j = 0u; j < min(p.n_allowed, 4u); j++) {
        open = open || p.allowed[j] == v;
    }
    for (var c = lid; c < p.n; c += WG) {
        var acc = 0.0;
        if open {
            for (var r = 0u; r < p.m; r++) {
                if ints[p.tok_off + r] == v {
                    acc += ld(p.dx_off + r * p.n + c);
                }
            }
        }
        st(p.dwte_off + v * p.n + c, acc);
    }
}
