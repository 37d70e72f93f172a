//! Planning: turns gradient views into binding windows, batches and a chunk
//! table. This is plain data with no GPU involved, so the dispatch
//! arithmetic can be tested anywhere.
//!
//! - A *window* is one storage binding: a range of one buffer, at most
//!   `max_storage_buffer_binding_size` long and starting at a multiple of the
//!   device's storage offset alignment. Views longer than a binding are
//!   split across windows.
//! - A *batch* is up to `slots` windows bound together; it costs one norm
//!   dispatch and one scale dispatch, however many views its windows hold.
//! - A *segment* is a contiguous run of elements of one group inside one
//!   window, at most `chunk_elements` long.
//! - A *chunk* is the work of one workgroup: one or more segments of one
//!   group in one batch, at most `chunk_elements` elements in all (so many
//!   short views share a workgroup). Chunks write one partial each; each
//!   group's partials are contiguous so the finalize pass can reduce them
//!   in a fixed order.

use crate::shaders::GradAccess;

/// The most segments one chunk holds, so that a chunk of many tiny views
/// does not become one long serial loop for its workgroup.
pub(crate) const MAX_SEGMENTS_PER_CHUNK: u32 = 64;

/// One non-empty or empty view, by index into the plan's distinct buffers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ViewSpec {
    pub buffer: usize,
    /// Byte offset, a multiple of 4.
    pub offset: u64,
    /// Length in f32 elements.
    pub len: u64,
    pub group: u32,
    /// Index of the view inside its group, for error messages.
    pub view: usize,
}

/// The device limits that shape a layout.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LayoutLimits {
    pub max_binding: u64,
    pub offset_alignment: u64,
    pub slots: u32,
    pub max_workgroups_per_dim: u32,
    pub chunk_elements: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub buffer: usize,
    pub offset: u64,
    pub size: u64,
    pub access: GradAccess,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Indices into `Layout::windows`; position in this list is the slot.
    pub windows: Vec<usize>,
    pub access: GradAccess,
    pub chunk_base: u32,
    pub n_chunks: u32,
    pub grid: (u32, u32),
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Layout {
    pub windows: Vec<Window>,
    pub batches: Vec<Batch>,
    /// (group, first segment, segment count, partial index)
    pub chunks: Vec<[u32; 4]>,
    /// (slot, first element in window, element count, 0)
    pub segments: Vec<[u32; 4]>,
    /// Per group: (first partial, partial count).
    pub group_ranges: Vec<[u32; 2]>,
}

/// Why a layout could not be made; indices refer to the caller's groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum LayoutError {
    Overlap {
        first: (u32, usize),
        second: (u32, usize),
    },
    TooLarge(String),
}

struct Run {
    buffer: usize,
    offset: u64,
    bytes: u64,
    group: u32,
}

/// Builds the layout. `buffer_sizes[i]` is the byte size of buffer `i`.
/// Views must already be validated (aligned, in range).
pub(crate) fn layout(
    views: &[ViewSpec],
    buffer_sizes: &[u64],
    n_groups: u32,
    limits: &LayoutLimits,
) -> Result<Layout, LayoutError> {
    if n_groups >= 1 << 24 {
        return Err(LayoutError::TooLarge(format!(
            "{n_groups} groups (at most 2^24 - 1)"
        )));
    }
    let runs = merge_runs(views)?;

    // Windows start at multiples of `stride`, which is both a valid storage
    // offset and a multiple of 16 bytes so vec4 indexing lines up.
    let align = limits.offset_alignment.max(16);
    let stride = limits.max_binding / align * align;
    if stride == 0 {
        return Err(LayoutError::TooLarge(format!(
            "max storage binding of {} bytes is below the offset alignment {align}",
            limits.max_binding
        )));
    }

    // Pieces of runs, each inside one window: (window key, offset, bytes, group).
    let mut window_ends: std::collections::BTreeMap<(usize, u64), u64> = Default::default();
    let mut pieces: Vec<((usize, u64), u64, u64, u32)> = Vec::new();
    for run in &runs {
        let mut pos = run.offset;
        let end = run.offset + run.bytes;
        while pos < end {
            let win_start = pos / stride * stride;
            let piece_end = end.min(win_start + stride);
            let key = (run.buffer, win_start);
            let e = window_ends.entry(key).or_insert(0);
            *e = (*e).max(piece_end);
            pieces.push((key, pos, piece_end - pos, run.group));
            pos = piece_end;
        }
    }

    let mut windows: Vec<Window> = window_ends
        .iter()
        .map(|(&(buffer, offset), &used_end)| {
            let avail = (buffer_sizes[buffer] - offset).min(stride);
            let vec4_size = avail / 16 * 16;
            if vec4_size > 0 && offset + vec4_size >= used_end {
                Window {
                    buffer,
                    offset,
                    size: vec4_size,
                    access: GradAccess::Vec4,
                }
            } else {
                Window {
                    buffer,
                    offset,
                    size: avail / 4 * 4,
                    access: GradAccess::Scalar,
                }
            }
        })
        .collect();
    // Vec4 windows first, so batches are homogeneous and the fast path fills.
    windows.sort_by_key(|w| (w.access == GradAccess::Scalar, w.buffer, w.offset));
    let window_of: std::collections::HashMap<(usize, u64), usize> = windows
        .iter()
        .enumerate()
        .map(|(i, w)| ((w.buffer, w.offset), i))
        .collect();

    // Batches: consecutive windows of one access type, `slots` at a time.
    let mut batches: Vec<Batch> = Vec::new();
    let mut slot_of = vec![(0usize, 0u32); windows.len()];
    for (i, w) in windows.iter().enumerate() {
        let start_new = match batches.last() {
            Some(b) => b.access != w.access || b.windows.len() as u32 >= limits.slots,
            None => true,
        };
        if start_new {
            batches.push(Batch {
                windows: Vec::new(),
                access: w.access,
                chunk_base: 0,
                n_chunks: 0,
                grid: (0, 0),
            });
        }
        let b = batches.len() - 1;
        slot_of[i] = (b, batches[b].windows.len() as u32);
        batches[b].windows.push(i);
    }

    // Segments per batch, split on a grid of `chunk_elements` relative to
    // the window so that segment boundaries fall on whole vec4s.
    let chunk = u64::from(limits.chunk_elements.max(4) / 4 * 4);
    let mut per_batch: Vec<Vec<(u32, [u32; 4])>> = vec![Vec::new(); batches.len()];
    pieces.sort_by_key(|&(key, offset, _, _)| (window_of[&key], offset));
    for &(key, offset, bytes, group) in &pieces {
        let w = window_of[&key];
        let (b, slot) = slot_of[w];
        let first = (offset - windows[w].offset) / 4;
        let end = first + bytes / 4;
        let mut pos = first;
        while pos < end {
            let next = ((pos / chunk + 1) * chunk).min(end);
            per_batch[b].push((group, [slot, pos as u32, (next - pos) as u32, 0]));
            pos = next;
        }
    }

    // Chunks: each batch's segments in group order (stable, so address
    // order within a group), consecutive segments of one group packed into
    // one chunk while they hold at most `chunk` elements together. Views
    // shorter than a chunk then share workgroups instead of costing one
    // each.
    let mut segments: Vec<[u32; 4]> = Vec::new();
    let per_batch: Vec<Vec<[u32; 4]>> = per_batch
        .into_iter()
        .map(|mut list| {
            list.sort_by_key(|&(group, _)| group);
            let mut packed: Vec<[u32; 4]> = Vec::new();
            let mut elements = 0u64;
            for (group, seg) in list {
                let ix = segments.len() as u32;
                segments.push(seg);
                match packed.last_mut() {
                    Some(c)
                        if c[0] == group
                            && c[2] < MAX_SEGMENTS_PER_CHUNK
                            && elements + u64::from(seg[2]) <= chunk =>
                    {
                        c[2] += 1;
                        elements += u64::from(seg[2]);
                    }
                    _ => {
                        packed.push([group, ix, 1, 0]);
                        elements = u64::from(seg[2]);
                    }
                }
            }
            packed
        })
        .collect();
    if segments.len() as u64 > u64::from(u32::MAX) / 2 {
        return Err(LayoutError::TooLarge(format!(
            "{} segments",
            segments.len()
        )));
    }

    let mut chunks = Vec::new();
    for (b, list) in per_batch.into_iter().enumerate() {
        let n = list.len() as u64;
        let max_dim = u64::from(limits.max_workgroups_per_dim);
        let grid = if n <= max_dim {
            (n, 1)
        } else {
            (max_dim, n.div_ceil(max_dim))
        };
        if grid.1 > max_dim || chunks.len() as u64 + n > u64::from(u32::MAX) {
            return Err(LayoutError::TooLarge(format!("{n} chunks in one batch")));
        }
        batches[b].chunk_base = chunks.len() as u32;
        batches[b].n_chunks = n as u32;
        batches[b].grid = (grid.0 as u32, grid.1 as u32);
        chunks.extend(list);
    }

    // Partials: group-major, so each group's partials are contiguous.
    let mut counts = vec![0u32; n_groups as usize];
    for c in &chunks {
        counts[c[0] as usize] += 1;
    }
    let mut group_ranges = Vec::with_capacity(n_groups as usize);
    let mut next = 0u32;
    for &n in &counts {
        group_ranges.push([next, 0]);
        next += n;
    }
    for c in chunks.iter_mut() {
        let r = &mut group_ranges[c[0] as usize];
        c[3] = r[0] + r[1];
        r[1] += 1;
    }

    Ok(Layout {
        windows,
        batches,
        chunks,
        segments,
        group_ranges,
    })
}

/// Sorts views by address, rejects overlaps, and merges views of one group
/// that touch end to end into a single run.
fn merge_runs(views: &[ViewSpec]) -> Result<Vec<Run>, LayoutError> {
    let mut sorted: Vec<&ViewSpec> = views.iter().filter(|v| v.len > 0).collect();
    sorted.sort_by_key(|v| (v.buffer, v.offset));

    let mut runs: Vec<Run> = Vec::new();
    // The view reaching furthest so far in the current buffer.
    let mut reach: Option<(&ViewSpec, u64)> = None;
    for v in sorted {
        let end = v.offset + v.len * 4;
        if let Some((prev, prev_end)) = reach {
            if prev.buffer == v.buffer && prev_end > v.offset {
                return Err(LayoutError::Overlap {
                    first: (prev.group, prev.view),
                    second: (v.group, v.view),
                });
            }
        }
        if reach.is_none_or(|(prev, prev_end)| prev.buffer != v.buffer || end > prev_end) {
            reach = Some((v, end));
        }
        match runs.last_mut() {
            Some(r)
                if r.buffer == v.buffer && r.group == v.group && r.offset + r.bytes == v.offset =>
            {
                r.bytes += v.len * 4;
            }
            _ => runs.push(Run {
                buffer: v.buffer,
                offset: v.offset,
                bytes: v.len * 4,
                group: v.group,
            }),
        }
    }
    Ok(runs)
}

impl Layout {
    /// Dispatches recorded by a full clip: a norm and a scale pass per
    /// batch, plus one finalize.
    pub fn clip_dispatches(&self) -> usize {
        2 * self.batches.len() + usize::from(!self.group_ranges.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LayoutLimits {
        LayoutLimits {
            max_binding: 1 << 20,
            offset_alignment: 256,
            slots: 2,
            max_workgroups_per_dim: 65535,
            chunk_elements: 1024,
        }
    }

    fn arena_views(n: usize, groups: u32) -> Vec<ViewSpec> {
        let mut offset = 0;
        (0..n)
            .map(|i| {
                let len = 1 + (i as u64 * 37) % 200;
                let v = ViewSpec {
                    buffer: 0,
                    offset,
                    len,
                    group: i as u32 % groups,
                    view: i,
                };
                offset += len * 4 + 4 * (i as u64 % 3);
                v
            })
            .collect()
    }

    /// Every element of every view lies in exactly one segment, of a chunk
    /// of the view's group; no segment reaches outside the views; a chunk
    /// holds at most `chunk` elements and `MAX_SEGMENTS_PER_CHUNK` segments,
    /// all inside its batch.
    fn check_coverage(views: &[ViewSpec], l: &Layout, chunk: u64) {
        use std::collections::HashMap;
        // (buffer, byte offset) -> group, for every element of every view.
        let mut owner: HashMap<(usize, u64), u32> = HashMap::new();
        for v in views {
            for e in 0..v.len {
                owner.insert((v.buffer, v.offset + 4 * e), v.group);
            }
        }
        let mut seen: HashMap<(usize, u64), u32> = HashMap::new();
        for b in &l.batches {
            for c in &l.chunks[b.chunk_base as usize..(b.chunk_base + b.n_chunks) as usize] {
                assert!(c[2] >= 1 && c[2] <= MAX_SEGMENTS_PER_CHUNK, "{c:?}");
                let segs = &l.segments[c[1] as usize..(c[1] + c[2]) as usize];
                let total: u64 = segs.iter().map(|s| u64::from(s[2])).sum();
                assert!(total <= chunk, "chunk {c:?} holds {total} elements");
                for seg in segs {
                    let w = &l.windows[b.windows[seg[0] as usize]];
                    for e in seg[1]..seg[1] + seg[2] {
                        let at = (w.buffer, w.offset + 4 * u64::from(e));
                        assert_eq!(owner.get(&at), Some(&c[0]), "element at {at:?}");
                        *seen.entry(at).or_default() += 1;
                    }
                }
            }
        }
        assert_eq!(
            seen.len(),
            owner.len(),
            "some view elements are in no segment"
        );
        assert!(
            seen.values().all(|&n| n == 1),
            "an element is in two segments"
        );
    }

    #[test]
    fn short_views_share_chunks() {
        // 1000 views of 64 elements, 8 groups interleaved, 1024-element
        // chunks: 16 views per chunk rather than one.
        let views: Vec<ViewSpec> = (0..1000)
            .map(|i| ViewSpec {
                buffer: 0,
                offset: i as u64 * 256,
                len: 64,
                group: i as u32 % 8,
                view: i,
            })
            .collect();
        let l = layout(&views, &[256_000], 8, &limits()).unwrap();
        check_coverage(&views, &l, 1024);
        assert_eq!(l.chunks.len(), 64, "8 groups of 125 views, 16 per chunk");

        // Tiny views stop at MAX_SEGMENTS_PER_CHUNK, not at the element count.
        let views: Vec<ViewSpec> = (0..1000)
            .map(|i| ViewSpec {
                buffer: 0,
                offset: i as u64 * 8,
                len: 1,
                group: 0,
                view: i,
            })
            .collect();
        let l = layout(&views, &[8000], 1, &limits()).unwrap();
        check_coverage(&views, &l, 1024);
        assert_eq!(
            l.chunks.len(),
            1000_usize.div_ceil(MAX_SEGMENTS_PER_CHUNK as usize)
        );
    }

    #[test]
    fn dispatch_count_does_not_grow_with_views_in_one_arena() {
        let mut counts = Vec::new();
        for n in [1, 10, 100, 1000] {
            let views = arena_views(n, 8);
            let l = layout(&views, &[1 << 19], 8, &limits()).unwrap();
            counts.push(l.clip_dispatches());
            check_coverage(&views, &l, 1024);
        }
        assert!(
            counts.iter().all(|&c| c == 3),
            "dispatches per arena: {counts:?}"
        );
    }

    #[test]
    fn large_views_split_across_windows_and_chunks() {
        // 3.5 MiB in one view, 1 MiB bindings: four windows, two batches.
        let len = (7u64 << 20) / 2 / 4;
        let views = [ViewSpec {
            buffer: 0,
            offset: 12,
            len,
            group: 0,
            view: 0,
        }];
        let l = layout(&views, &[len * 4 + 16], 1, &limits()).unwrap();
        assert_eq!(l.windows.len(), 4);
        assert_eq!(l.batches.len(), 2);
        check_coverage(&views, &l, 1024);
        assert_eq!(l.group_ranges, vec![[0, l.chunks.len() as u32]]);
    }

    #[test]
    fn grid_folds_into_two_dimensions() {
        let mut lim = limits();
        lim.max_workgroups_per_dim = 16;
        lim.chunk_elements = 4;
        let views = [ViewSpec {
            buffer: 0,
            offset: 0,
            len: 4 * 100,
            group: 0,
            view: 0,
        }];
        let l = layout(&views, &[1600], 1, &lim).unwrap();
        assert_eq!(l.batches[0].n_chunks, 100);
        assert_eq!(l.batches[0].grid, (16, 7));
    }

    #[test]
    fn overlaps_are_rejected_and_touching_views_merge() {
        let touching = [
            ViewSpec {
                buffer: 0,
                offset: 0,
                len: 4,
                group: 0,
                view: 0,
            },
            ViewSpec {
                buffer: 0,
                offset: 16,
                len: 4,
                group: 0,
                view: 1,
            },
        ];
        let l = layout(&touching, &[64], 1, &limits()).unwrap();
        assert_eq!(l.chunks.len(), 1);

        let overlapping = [
            ViewSpec {
                buffer: 0,
                offset: 0,
                len: 100,
                group: 0,
                view: 0,
            },
            ViewSpec {
                buffer: 0,
                offset: 40,
                len: 4,
                group: 1,
                view: 0,
            },
            ViewSpec {
                buffer: 0,
                offset: 200,
                len: 4,
                group: 1,
                view: 1,
            },
        ];
        let err = layout(&overlapping, &[1024], 2, &limits()).unwrap_err();
        assert_eq!(
            err,
            LayoutError::Overlap {
                first: (0, 0),
                second: (1, 0)
            }
        );
    }

    #[test]
    fn ragged_buffer_end_falls_back_to_scalar_access() {
        // A 20-byte buffer: the last element is outside any whole vec4.
        let views = [ViewSpec {
            buffer: 0,
            offset: 0,
            len: 5,
            group: 0,
            view: 0,
        }];
        let l = layout(&views, &[20], 1, &limits()).unwrap();
        assert_eq!(l.windows[0].access, GradAccess::Scalar);
        assert_eq!(l.windows[0].size, 20);

        let views = [ViewSpec {
            buffer: 0,
            offset: 0,
            len: 4,
            group: 0,
            view: 0,
        }];
        let l = layout(&views, &[20], 1, &limits()).unwrap();
        assert_eq!(l.windows[0].access, GradAccess::Vec4);
        assert_eq!(l.windows[0].size, 16);
    }

    #[test]
    fn too_many_groups_is_an_error() {
        let err = layout(&[], &[], 1 << 24, &limits()).unwrap_err();
        assert!(matches!(err, LayoutError::TooLarge(_)));
        assert!(layout(&[], &[], (1 << 24) - 1, &limits()).is_ok());
    }

    #[test]
    fn partials_are_contiguous_per_group() {
        let views = arena_views(300, 5);
        let l = layout(&views, &[1 << 19], 5, &limits()).unwrap();
        let mut seen = vec![false; l.chunks.len()];
        for (g, r) in l.group_ranges.iter().enumerate() {
            for p in r[0]..r[0] + r[1] {
                let c = l.chunks.iter().find(|c| c[3] == p).unwrap();
                assert_eq!(c[0], g as u32);
                seen[p as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
    }
}
