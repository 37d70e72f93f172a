// Scale pass: multiplies each chunk by its group's coefficient. A workgroup
// whose coefficient is exactly 1 returns before touching the gradients, so
// an inactive clip writes nothing and needs no host round trip to know it.

// @slot-begin
fn scale_range_SLOT(first: u32, end: u32, lix: u32, c: f32) {
    let end4 = (end + 3u) / 4u;
    for (var i4 = first / 4u + lix; i4 < end4; i4 += WG_SIZE) {
        store4_SLOT(i4, load4_SLOT(i4) * c, lanes_inside(i4, first, end));
    }
}
// @slot-end

fn scale_range(slot: u32, first: u32, end: u32, lix: u32, c: f32) {
    switch slot {
        // @slot-case case SLOTu: { scale_range_SLOT(first, end, lix, c); }
        default: {}
    }
}

@compute @workgroup_size(WG_SIZE)
fn scale(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lix: u32,
) {
    let chunk_ix = chunk_index(wg);
    if (chunk_ix >= params.n_chunks) {
        return;
    }
    let chunk = plan_table[params.chunk_base + chunk_ix];
    let c = bitcast<f32>(scratch[params.coef_base + (chunk.x >> 8u)].y);
    if (c == 1.0) {
        return;
    }
    scale_range(chunk.x & 0xffu, chunk.y, chunk.y + chunk.z, lix, c);
}
