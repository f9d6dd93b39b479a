// FileStreamer: the bytes of one file of a stored version, piece by piece, decoded ahead on several
// threads while the caller sends the pieces before them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "codec/manifest.h"
#include "common/sha256.h"
#include "common/status.h"

namespace deltastore {

class VersionReader;

// Produces the bytes [begin, end) of a file of a version piece by piece (at most kChunkSize each, one
// stored chunk per piece). With `verify` and a whole-file range, the sha256 of what was produced is checked
// against the manifest before the last piece is handed out, so a wrong rebuild never completes; the
// chunks are then read, through clones of the reader, without checking their own digests
// (ChunkStore::GetUnverified), since the file's digest covers them.
//
// Pieces are decoded by `workers` threads (0: as many as the machine has cores, at most
// kMaxStreamWorkers), each with its own copy of the reader, while the caller consumes the pieces before
// them; they come out in order and identical to a one-worker run. At most workers + 2 pieces are decoded
// or waiting at any time (each at most kChunkSize, with its base piece and stored chunk while it
// decodes), so memory is bounded whatever the file size. The threads start at the first Next() and stop
// when the streamer is destroyed (a worker finishes the piece it is decoding first). With one worker, or
// a range of one piece, pieces are decoded in Next() itself, on the caller's thread.
inline constexpr size_t kMaxStreamWorkers = 16;
class FileStreamer {
 public:
  FileStreamer(VersionReader* reader, const FileEntry* file, uint64_t begin, uint64_t end, bool verify,
               size_t workers = 0);
  ~FileStreamer();
  FileStreamer(const FileStreamer&) = delete;
  FileStreamer& operator=(const FileStreamer&) = delete;

  // The next piece; empty at the end. After an error every later call returns that error.
  StatusOr<std::string> Next();

 private:
  struct Segment {
    uint64_t begin, size;
    const TensorEntry* tensor;            // a tensor, or
    const std::vector<ChunkRef>* chunks;  // plain chunks (header, blob)
  };
  struct Piece {
    const Segment* segment;
    uint64_t in_segment, size;
  };
  // The next piece to decode (advancing pos_), or nullopt at the end. Under mu_ once workers run.
  StatusOr<std::optional<Piece>> Plan();
  static Status Read(VersionReader* reader, const Piece& piece, std::string* out);
  // The next piece in order: decoded here (one worker) or taken from the workers.
  StatusOr<std::string> Produce();
  // Makes the workers' readers and starts their threads (none for one worker).
  Status Setup();
  void Work(VersionReader* reader);

  VersionReader* reader_;
  const FileEntry* file_;
  std::vector<Segment> segments_;
  size_t segment_ = 0;
  uint64_t pos_, end_;
  uint64_t delivered_;  // file offset after the last piece handed out
  bool verify_;
  size_t workers_;
  Sha256 hash_;
  std::vector<ChunkRef> header_;
  Status failed_;  // the first error handed out

  // Decoding ahead (workers_ > 1).
  VersionReader* first_ = nullptr;                      // the first worker's reader, once set up
  std::vector<std::unique_ptr<VersionReader>> clones_;  // the others' (and the first's, with verify_)
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable work_cv_;                 // workers: room in the window, or stop
  std::condition_variable ready_cv_;                // Next(): a piece is decoded, or planning ended
  std::map<uint64_t, StatusOr<std::string>> done_;  // decoded pieces not yet handed out, by index
  uint64_t planned_ = 0;                            // pieces given to workers
  uint64_t taken_ = 0;                              // pieces handed out
  bool planning_done_ = false;
  bool stop_ = false;
};

}  // namespace deltastore
