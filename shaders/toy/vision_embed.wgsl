// vision_embed: a ViT's token table for each image: row 0 is the class
// embedding, rows 1.. already hold the patch embeddings; every row then
// gets its learned position added.

struct Params {
    x_off: u32,   // [images, tokens, n], patches already in rows 1..
    images: u32,
    tokens: u32,
    n: u32,
    cls_off: u32, // [n]
    pos_off: u32, // [tokens, n]
    _pad0: u32,
    _pad1: u32,
}

@group(1) @binding(0) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn vision_embed(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if i >= p.images * p.tokens * p.n {
        return;
    }
    let row = (i / p.n) % p.tokens;
    let c = i % p.n;
    var v = ld(p.x_off + i);
    if row == 0u {
        v = ld(p.cls_off + c);
    }
    st(p.x_off + i, v + ld(p.pos_off + row * p.n + c));
}
