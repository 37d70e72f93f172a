// Gradient bindings read as vec4<f32>: the fast path, used for binding
// windows whose byte length is a multiple of 16. The block between the
// slot markers is repeated once per storage binding the device allows.

// @slot-begin
@group(0) @binding(SLOT_BINDING) var<storage, read_write> grad_SLOT: array<vec4<f32>>;

fn load4_SLOT(i4: u32) -> vec4<f32> {
    return grad_SLOT[i4];
}

// Writes only the lanes inside the view: the others may belong to another
// view, another group, or bytes the caller owns.
fn store4_SLOT(i4: u32, v: vec4<f32>, inside: vec4<bool>) {
    if (all(inside)) {
        grad_SLOT[i4] = v;
        return;
    }
    if (inside.x) {
        grad_SLOT[i4].x = v.x;
    }
    if (inside.y) {
        grad_SLOT[i4].y = v.y;
    }
    if (inside.z) {
        grad_SLOT[i4].z = v.z;
    }
    if (inside.w) {
        grad_SLOT[i4].w = v.w;
    }
}
// @slot-end
