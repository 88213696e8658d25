//! The reference proxy's global allocator: mimalloc, called the way C calls it.
//!
//! The `mimalloc` crate's allocator passes every allocation to `mi_malloc_aligned`, whatever its
//! alignment. mimalloc (v3) serves that from its fast path only for blocks up to 1 KiB; a larger
//! one whose size is not a power of two goes to a fallback that allocates `size + align - 1` and
//! marks the page as holding interior pointers, so that freeing from it is slower too. A proxy's
//! buffers are mostly larger than 1 KiB (hyper's are 8 KiB), so that was about one allocation in
//! two per request, at roughly twenty times the cost of the fast path (counted with callgrind).
//! Plain `mi_malloc` already returns blocks aligned to 16 bytes when they are 16 bytes or more,
//! as C's `malloc` must, which covers every Rust layout with an alignment up to 16; only larger
//! alignments need the aligned entry points.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least that size has (`MI_MAX_ALIGN_SIZE`).
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator: `mi_malloc` for layouts its blocks already satisfy,
/// `mi_malloc_aligned` for the rest.
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: examples::alloc::Mimalloc = examples::alloc::Mimalloc;
///
/// let v: Vec<u64> = (0..1000).collect();
/// assert_eq!(v.iter().sum::<u64>(), 499_500);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Mimalloc;

/// Whether a block of `size` bytes from plain `mi_malloc` is aligned enough for `align`: mimalloc
/// aligns blocks of 16 bytes or more to 16, and smaller ones to 8, and a Rust size is a multiple
/// of its alignment.
fn plain_fits(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

// SAFETY (for each method): mimalloc's functions are thread-safe and accept any size; a block
// from any of them may be freed or reallocated by `mi_free` / `mi_realloc*`, whichever entry
// point allocated it; `plain_fits` keeps every layout's alignment satisfied (see above).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain_fits(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl.
        unsafe {
            if plain_fits(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: see the impl; `ptr` came from this allocator.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: see the impl; `ptr` came from this allocator.
        unsafe {
            if plain_fits(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment a Rust layout can have up to 64 KiB and 4 KiB, through each
    /// entry point: the blocks are aligned as asked, zeroed when asked, and keep their bytes
    /// when they grow or shrink.
    #[test]
    #[allow(unsafe_code)]
    fn blocks_are_aligned_as_their_layout_asks() {
        let alloc = Mimalloc;
        let mut align = 1;
        while align <= 4096 {
            let mut size = align;
            while size <= 64 * 1024 {
                for size in [size, size + align, size * 3] {
                    let layout = Layout::from_size_align(size, align).expect("a valid layout");
                    // SAFETY: a non-zero size; the block is freed once, with its layout.
                    unsafe {
                        let p = alloc.alloc(layout);
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                        p.write_bytes(0xa5, size);
                        let grown = alloc.realloc(p, layout, size * 2 + 8);
                        assert_eq!(grown as usize % align, 0, "grown {size}, align {align}");
                        assert_eq!(*grown.add(size - 1), 0xa5);
                        let grown_layout =
                            Layout::from_size_align(size * 2 + 8, align).expect("layout");
                        let shrunk = alloc.realloc(grown, grown_layout, 1);
                        assert_eq!(shrunk as usize % align, 0, "shrunk {size}, align {align}");
                        assert_eq!(*shrunk, 0xa5);
                        alloc.dealloc(shrunk, Layout::from_size_align(1, align).expect("layout"));

                        let z = alloc.alloc_zeroed(layout);
                        assert_eq!(z as usize % align, 0);
                        assert!(std::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                        alloc.dealloc(z, layout);
                    }
                }
                size *= 2;
            }
            align *= 2;
        }
    }
}
