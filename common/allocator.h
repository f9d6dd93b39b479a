// The allocator settings deltastored runs with (server/main.cc), for the programs that measure its code
// as the server runs it (bench/codec_peers).
#pragma once

namespace deltastore {

// Chunks and pieces are 4 MiB buffers made and freed thousands of times per download and ingest. By
// default glibc maps each one fresh (or trims the heap under it) and the kernel zeroes every page again:
// 15% of a download's CPU. With this, buffers below 6 MiB (a chunk with its codecs' slack) come from the
// heap instead, which gives memory back only past 64 MiB free at its top. Larger ones are mapped and
// returned when freed: with 32 MiB, the lossy compressor's 8 MiB blocks (1M-element float64 and int64
// temporaries) fragmented the heap, +290 to +410 MiB at the peak of one 4096 x 11008 tensor
// (bench/lossy_memory).
// Threads share one malloc arena per core (at least two), not glibc's default of up to eight per core:
// each arena keeps the free pages at the top of its heap (glibc trims a thread arena's top only past the
// trim threshold, and malloc_trim not at all), so every thread that once ran a tensor's compression held
// tens of MiB of them in an arena no other thread reused. A 1-layer LLM pair's lossy ingest at 16x peaked
// at 585-691 MiB beyond libtorch's footprint with the default arenas and 509-560 MiB with two
// (bench/big_ingest.py, 2 cores).
// Call it first thing in main, before any thread starts.
void UseServerAllocatorSettings();

// Gives the free pages inside every malloc arena back to the system (malloc_trim; not those at the top of
// a thread arena's heap, see above). A job's threads leave free memory in their arenas (below the trim
// threshold, or under live blocks) that the next job, on other threads, need not reuse: after a 0.9 GB
// lossless base version the server held 145-230 MiB more than before it, of which this gave back 40-100
// MiB.
void ReturnFreeMemory();

}  // namespace deltastore
