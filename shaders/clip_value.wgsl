// Value clipping: clamps every element to [-clip_value, clip_value]. Only
// lanes that change are written, and NaN stays NaN (it compares false).

// @slot-begin
fn clamp_range_SLOT(first: u32, end: u32, lix: u32, limit: f32) {
    let end4 = (end + 3u) / 4u;
    for (var i4 = first / 4u + lix; i4 < end4; i4 += WG_SIZE) {
        let v = load4_SLOT(i4);
        let over = (abs(v) > vec4<f32>(limit)) & lanes_inside(i4, first, end);
        if (any(over)) {
            store4_SLOT(i4, sign(v) * limit, over);
        }
    }
}
// @slot-end

fn clamp_range(slot: u32, first: u32, end: u32, lix: u32, limit: f32) {
    switch slot {
        // @slot-case case SLOTu: { clamp_range_SLOT(first, end, lix, limit); }
        default: {}
    }
}

@compute @workgroup_size(WG_SIZE)
fn clamp_values(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lix: u32,
) {
    let chunk_ix = chunk_index(wg);
    if (chunk_ix >= params.n_chunks) {
        return;
    }
    let chunk = plan_table[params.chunk_base + chunk_ix];
    clamp_range(chunk.x & 0xffu, chunk.y, chunk.y + chunk.z, lix, params.clip_value);
}
