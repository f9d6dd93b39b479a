// The allocator settings deltastored runs with (server/main.cc), for the programs that measure its code
// as the server runs it (bench/codec_peers).
#pragma once

namespace deltastore {

// Chunks and pieces are 4 MiB buffers made and freed thousands of times per download and ingest. By
// default glibc maps each one fresh (or trims the heap under it) and the kernel zeroes every page again:
// 15% of a download's CPU. With this, buffers below 32 MiB come from the heap instead, which gives memory
// back only past 64 MiB free at its top. Call it first thing in main, before any thread starts.
void UseServerAllocatorSettings();

}  // namespace deltastore
