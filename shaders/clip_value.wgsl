// Value clipping: clamps every element to [-clip_value, clip_value]. Only
// lanes that change are written, and NaN stays NaN (it compares false).

// @slot-begin
fn clamp_vec4_SLOT(i4: u32, limit: f32, inside: vec4<bool>) {
    let v = load4_SLOT(i4);
    let over = (abs(v) > vec4<f32>(limit)) & inside;
    if (any(over)) {
        store4_SLOT(i4, sign(v) * limit, over);
    }
}

fn clamp_range_SLOT(first: u32, end: u32, lix: u32, limit: f32) {
    let walk = team_walk(first, end, lix);
    for (var i4 = walk.start; i4 < walk.end; i4 += LANES) {
        clamp_vec4_SLOT(i4, limit, vec4<bool>(true));
    }
    let edge = edge_vec4(first, end, lix);
    if (edge != NO_EDGE) {
        clamp_vec4_SLOT(edge, limit, lanes_inside(edge, first, end));
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
    for (var s = chunk.y; s < chunk.y + chunk.z; s++) {
        let segment = plan_table[s];
        clamp_range(segment.x, segment.y, segment.y + segment.z, lix, params.clip_value);
    }
}
