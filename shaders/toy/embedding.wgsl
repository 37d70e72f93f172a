// embedding: x[r, c] = wte[tokens[r], c] + wpe[r % t, c], the language
// model's input: token embeddings plus learned positions.

struct Params {
    tok_off: u32, // ints: [m] token ids
    m: u32,
    n: u32,       // model width
    t: u32,       // sequence length
    wte_off: u32, // [vocab, n]
    wpe_off: u32, // [t, n]
    x_off: u32,   // [m, n]
    vocab: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn embedding(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if i >= p.m * p.n {
        return;
    }
    let r = i / p.n;
    let c = i % p.n;
    // An out-of-range id reads row 0 rather than another tensor.
    var tok = ints[p.tok_off + r];
    if tok >= p.vocab {
        tok = 0u;
    }
    st(p.x_off + i, ld(p.wte_off + tok * p.n + c) + ld(p.wpe_off + (r % p.t) * p.n + c));
}
