#include "service/ingest.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <fstream>
#include <future>
#include <thread>
#include <utility>

#include "service/ingest_internal.h"

namespace deltastore {
namespace ingest_detail {

Status Cancelled() {
  return Unavailable("ingest cancelled: the server is stopping");
}

bool IsCancelled(const IngestOptions& options) {
  return options.cancelled && options.cancelled();
}

// Whether the lossy hook may take tensor `t` (see LossyFilter).
bool Takes(const IngestOptions& options, const TensorInfo& t) {
  return !options.lossy_takes || options.lossy_takes(t);
}

// A failure of a lossy step is the ingest's cancellation when that is what stopped it.
Status LossyFailure(const IngestOptions& options, const Status& s) {
  return !s.ok() && IsCancelled(options) ? Cancelled() : s;
}

bool SameLayout(const TensorEntry& base, const TensorInfo& t) {
  return base.dtype == t.dtype && base.shape == t.shape && base.size == t.size();
}

}  // namespace ingest_detail

namespace {

using namespace ingest_detail;

// The checksum of a lossless version's file for the file cache, which adopts the file once it is
// stored; null when there is no cache or the version is lossy (the bytes served differ then).
std::unique_ptr<Xxh128> CacheChecksum(const IngestOptions& options) {
  if (options.file_cache == nullptr || options.lossy) return nullptr;
  return std::make_unique<Xxh128>();
}

// Takes references as chunks are put, and drops them all again unless committed.
class RefGuard {
 public:
  explicit RefGuard(ChunkStore* store) : store_(store) {}
  ~RefGuard() {
    if (committed_) return;
    for (const auto& d : taken_) (void)store_->Unref(d);
  }
  StatusOr<ChunkRef> Put(std::string_view encoded, uint64_t raw_size, IngestStats* stats) {
    DS_ASSIGN_OR_RETURN(PutResult r, store_->Put(encoded));
    taken_.push_back(r.digest);
    stats->encoded_bytes += encoded.size();
    stats->new_bytes += r.stored_bytes;
    stats->chunks += 1;
    stats->new_chunks += r.inserted ? 1 : 0;
    return ChunkRef{r.digest, raw_size, encoded.size()};
  }
  void Commit() { committed_ = true; }

 private:
  ChunkStore* store_;
  std::vector<Digest> taken_;
  bool committed_ = false;
};

// Encodes chunks on up to `threads` threads at once and puts them into the store in the order they were
// submitted (so a store sees the same puts as from a serial run). Memory: `threads` chunks in flight, each
// with its base piece and encoding. Encoding is a pure function of its inputs, so the bytes are the same.
class ChunkPipeline {
 public:
  ChunkPipeline(RefGuard* guard, IngestStats* stats, size_t threads)
      : guard_(guard),
        stats_(stats),
        threads_(threads != 0 ? threads : std::max<size_t>(1, std::thread::hardware_concurrency())) {}
  ChunkPipeline(const ChunkPipeline&) = delete;
  ChunkPipeline& operator=(const ChunkPipeline&) = delete;
  ~ChunkPipeline() {
    for (auto& p : pending_) p.encoded.wait();  // an error return leaves nothing running
  }

  // Encodes `raw` (against `base` when not empty) and appends its reference to *dest once put.
  Status Submit(DType dtype, std::string raw, std::string base, const EncodeOptions& options,
                std::vector<ChunkRef>* dest) {
    const uint64_t size = raw.size();
    if (threads_ <= 1) {
      DS_ASSIGN_OR_RETURN(ChunkRef r, guard_->Put(EncodeChunk(dtype, raw, base, options), size, stats_));
      dest->push_back(r);
      return OkStatus();
    }
    // async | deferred: where no thread can be started, the chunk is encoded when it is put.
    pending_.push_back({std::async(std::launch::async | std::launch::deferred,
                                   [dtype, options, raw = std::move(raw), base = std::move(base)] {
                                     return EncodeChunk(dtype, raw, base, options);
                                   }),
                        size, dest});
    while (pending_.size() >= threads_) DS_RETURN_IF_ERROR(PutFirst());
    return OkStatus();
  }

  // Puts every chunk submitted so far.
  Status Drain() {
    while (!pending_.empty()) DS_RETURN_IF_ERROR(PutFirst());
    return OkStatus();
  }

 private:
  struct Pending {
    std::future<std::string> encoded;
    uint64_t raw_size;
    std::vector<ChunkRef>* dest;
  };
  Status PutFirst() {
    Pending p = std::move(pending_.front());
    pending_.pop_front();
    DS_ASSIGN_OR_RETURN(ChunkRef r, guard_->Put(p.encoded.get(), p.raw_size, stats_));
    p.dest->push_back(r);
    return OkStatus();
  }

  RefGuard* guard_;
  IngestStats* stats_;
  size_t threads_;
  std::deque<Pending> pending_;
};

StatusOr<std::vector<ChunkRef>> PutBytesAsChunks(RefGuard* guard, std::string_view bytes, IngestStats* stats,
                                                 const IngestOptions& options) {
  std::vector<ChunkRef> out;
  for (uint64_t off = 0; off < bytes.size() || (off == 0 && bytes.empty()); off += kChunkSize) {
    std::string_view piece = bytes.substr(off, kChunkSize);
    DS_ASSIGN_OR_RETURN(ChunkRef r,
                        guard->Put(EncodeChunk(DType::kU8, piece, {}, options.encode), piece.size(), stats));
    out.push_back(r);
    if (bytes.empty()) break;
  }
  return out;
}

StatusOr<FileEntry> IngestBlob(RefGuard* guard, const IngestFile& in, IngestStats* stats,
                               const IngestOptions& options) {
  std::ifstream f(in.source_path, std::ios::binary);
  if (!f) return NotFound("cannot open " + in.source_path);
  FileEntry e;
  e.path = in.path;
  e.kind = FileKind::kBlob;
  Sha256 hash;
  std::unique_ptr<Xxh128> xxh = CacheChecksum(options);
  std::string buf(kChunkSize, '\0');
  while (true) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize got = f.gcount();
    if (got <= 0 && !e.chunks.empty()) break;
    std::string_view piece(buf.data(), static_cast<size_t>(std::max<std::streamsize>(got, 0)));
    hash.Update(piece);
    if (xxh) xxh->Update(piece);
    e.size += piece.size();
    DS_ASSIGN_OR_RETURN(ChunkRef r,
                        guard->Put(EncodeChunk(DType::kU8, piece, {}, options.encode), piece.size(), stats));
    e.chunks.push_back(r);
    if (got < static_cast<std::streamsize>(buf.size())) break;
  }
  if (f.bad()) return IOError("read failed: " + in.source_path);
  e.sha256 = hash.Finish();
  if (xxh) options.file_cache->Adopt(in.source_path, e.sha256, e.size, xxh->Finish());
  stats->logical_bytes += e.size;
  return e;
}

// Pass 1 of a safetensors file: each tensor's sha256 here and the whole file's on a thread of its own,
// both reading in order (the parser has checked that the tensors fill the data section without gaps, so
// the file is the header then the tensors). A lossless version's file cache adopts the file.
Status HashTensors(const SafetensorsFile& file, const IngestFile& in, const IngestOptions& options,
                   FileEntry* e) {
  const SafetensorsHeader& h = file.header();
  Sha256 file_hash;
  Status file_read;
  std::unique_ptr<Xxh128> xxh = CacheChecksum(options);
  std::jthread whole([&] {
    file_hash.Update(h.header_bytes);
    if (xxh) xxh->Update(h.header_bytes);
    std::string piece;
    for (uint64_t off = h.header_bytes.size(); off < h.file_size() && file_read.ok(); off += kChunkSize) {
      piece.resize(std::min<uint64_t>(kChunkSize, h.file_size() - off));
      file_read = file.ReadAt(off, piece.size(), piece.data());
      file_hash.Update(piece);
      if (xxh) xxh->Update(piece);
    }
  });
  std::string buf;
  for (const auto& t : h.tensors) {
    Sha256 th;
    for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
      uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
      buf.resize(len);
      DS_RETURN_IF_ERROR(file.ReadTensorRange(t, off, len, buf.data()));
      th.Update(buf);
    }
    TensorEntry te;
    te.name = t.name;
    te.dtype = t.dtype;
    te.shape = t.shape;
    te.offset = t.begin;
    te.size = t.size();
    te.sha256 = th.Finish();
    e->tensors.push_back(std::move(te));
  }
  whole.join();
  DS_RETURN_IF_ERROR(file_read);
  e->sha256 = file_hash.Finish();
  if (xxh) options.file_cache->Adopt(in.source_path, e->sha256, e->size, xxh->Finish());
  return OkStatus();
}

StatusOr<FileEntry> IngestSafetensors(RefGuard* guard, const IngestFile& in, VersionReader* base,
                                      IngestStats* stats, const IngestOptions& options,
                                      IngestProgress* progress, const ProgressFn& report) {
  DS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(in.source_path));
  const SafetensorsHeader& h = file->header();
  FileEntry e;
  e.path = in.path;
  e.kind = FileKind::kSafetensors;
  e.size = h.file_size();
  DS_RETURN_IF_ERROR(HashTensors(*file, in, options, &e));
  std::string buf;

  DS_ASSIGN_OR_RETURN(auto header_chunks, PutBytesAsChunks(guard, h.header_bytes, stats, options));
  if (header_chunks.size() != 1) return Internal("header larger than one chunk");
  e.header = header_chunks[0];

  // Pass 2: encode each tensor, against its base tensor when the layout matches. The file as it will be
  // served is hashed on the way (it differs from the upload only where tensors are stored lossily). The
  // lossy hook's tensors are compressed ahead (LossyAhead) and taken here in file order.
  Sha256 served_hash;
  served_hash.Update(h.header_bytes);
  auto shared = std::make_shared<SharedProgress>(*progress, report, options.cancelled);
  std::vector<const TensorEntry*> base_of(h.tensors.size(), nullptr);
  std::vector<LossyAhead::Offer> offers;
  uint32_t stream = 0;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const TensorInfo& t = h.tensors[i];
    const TensorEntry* bt = base ? base->FindTensor(t.name) : nullptr;
    if (bt != nullptr && !SameLayout(*bt, t)) bt = nullptr;
    base_of[i] = bt;
    if (bt == nullptr || bt->sha256 == e.tensors[i].sha256 || !options.lossy) continue;
    // a tensor the hook does not take is stored losslessly below, numbered as if offered
    if (Takes(options, t)) offers.push_back({i, bt, stream});
    ++stream;
  }
  ChunkPipeline pipeline(guard, stats, options.encode_threads);
  // After served_hash: destroyed first, it joins the tensors still streaming into that hash.
  LossyAhead ahead(*file, base, options, offers, shared);
  for (size_t i = 0, offered = 0; i < h.tensors.size(); ++i) {
    if (IsCancelled(options)) return Cancelled();
    DS_RETURN_IF_ERROR(ahead.Reach(i));
    const TensorInfo& t = h.tensors[i];
    TensorEntry& te = e.tensors[i];
    const TensorEntry* bt = base_of[i];
    std::optional<LossyOutcome> lossy;
    bool taken = false;  // by the lossy hook, and counted in the progress then
    if (bt != nullptr && bt->sha256 == te.sha256) {
      te.encoding = TensorEncoding::kSameAsBase;
      stats->tensors_same++;
    } else if (offered < offers.size() && offers[offered].index == i) {
      ++offered;
      taken = true;
      DS_ASSIGN_OR_RETURN(lossy, ahead.Take(&served_hash, &te.sha256));
    }
    uint64_t counted = 0;  // bytes of this tensor already in the progress
    if (lossy) {
      DS_RETURN_IF_ERROR(pipeline.Drain());  // the lossless chunks before it are put first
      te.encoding = TensorEncoding::kLossy;
      DS_ASSIGN_OR_RETURN(ChunkRef r, guard->Put(lossy->chunk, t.size(), stats));
      te.chunks.push_back(r);
      stats->tensors_lossy++;
      stats->lossy_reports.push_back(std::move(lossy->report_json));
    } else if (te.encoding != TensorEncoding::kSameAsBase) {
      te.encoding = bt ? TensorEncoding::kDelta : TensorEncoding::kStandalone;
      (bt ? stats->tensors_delta : stats->tensors_standalone)++;
      for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
        uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
        std::string piece(len, '\0');
        DS_RETURN_IF_ERROR(file->ReadTensorRange(t, off, len, piece.data()));
        if (options.lossy) served_hash.Update(piece);
        std::string base_piece;
        if (bt) {
          base_piece.resize(len);
          DS_RETURN_IF_ERROR(base->ReadTensor(*bt, off, len, base_piece.data()));
        }
        DS_RETURN_IF_ERROR(
            pipeline.Submit(t.dtype, std::move(piece), std::move(base_piece), options.encode, &te.chunks));
        // Progress moves chunk by chunk: one tensor can take many seconds (the reporter throttles).
        if (!taken) shared->Add(len);
        counted += len;
      }
    }
    if (options.lossy && te.encoding == TensorEncoding::kSameAsBase) {
      for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
        buf.resize(std::min<uint64_t>(kChunkSize, t.size() - off));
        DS_RETURN_IF_ERROR(file->ReadTensorRange(t, off, buf.size(), buf.data()));
        served_hash.Update(buf);
      }
    }
    stats->tensors++;
    if (!taken) shared->Add(t.size() - counted, 1);  // Take counted a lossy hook's tensor
  }
  *progress = shared->Now();
  DS_RETURN_IF_ERROR(pipeline.Drain());
  if (options.lossy) {
    Digest served = served_hash.Finish();
    if (served != e.sha256) {
      e.source_sha256 = e.sha256;
      e.sha256 = served;
    }
  }
  stats->logical_bytes += e.size;
  return e;
}

}  // namespace

StatusOr<Manifest> IngestFiles(ChunkStore* store, const std::vector<IngestFile>& files, VersionReader* base,
                               const IngestOptions& options, IngestStats* stats, const ProgressFn& progress) {
  IngestStats local;
  if (stats == nullptr) stats = &local;
  RefGuard guard(store);
  Manifest m;
  if (base != nullptr) m.base = ManifestDigest(base->manifest());
  IngestProgress p;
  for (const auto& f : files) {
    if (IsSafetensorsPath(f.path)) {
      auto file = SafetensorsFile::Open(f.source_path);
      if (!file.ok()) return file.status().Annotate(f.path);
      p.tensors_total += (*file)->header().tensors.size();
      p.bytes_total += (*file)->header().data_size;
    }
  }
  IngestOptions encoding = options;
  if (options.lossy && options.lossy_planner.probe) {
    DS_ASSIGN_OR_RETURN(encoding.lossy_reach, PlanLossy(files, base, options, p, progress));
  }
  for (const auto& f : files) {
    if (m.FindFile(f.path) != nullptr) return InvalidArgument("file " + f.path + " appears twice");
    StatusOr<FileEntry> e = IsSafetensorsPath(f.path)
                                ? IngestSafetensors(&guard, f, base, stats, encoding, &p, progress)
                                : IngestBlob(&guard, f, stats, options);
    if (!e.ok()) return e.status().Annotate(f.path);
    m.files.push_back(std::move(*e));
  }
  guard.Commit();
  return m;
}

Status ReleaseManifest(ChunkStore* store, const Manifest& manifest) {
  for (const auto& d : manifest.ChunkDigests()) DS_RETURN_IF_ERROR(store->Unref(d));
  return OkStatus();
}

}  // namespace deltastore
