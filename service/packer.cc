#include "service/packer.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>

namespace deltastore {
namespace {

bool IsSafetensorsPath(std::string_view path) {
  constexpr std::string_view kExt = ".safetensors";
  return path.size() >= kExt.size() && path.substr(path.size() - kExt.size()) == kExt;
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
  std::string buf(kChunkSize, '\0');
  while (true) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    std::streamsize got = f.gcount();
    if (got <= 0 && !e.chunks.empty()) break;
    std::string_view piece(buf.data(), static_cast<size_t>(std::max<std::streamsize>(got, 0)));
    hash.Update(piece);
    e.size += piece.size();
    DS_ASSIGN_OR_RETURN(ChunkRef r,
                        guard->Put(EncodeChunk(DType::kU8, piece, {}, options.encode), piece.size(), stats));
    e.chunks.push_back(r);
    if (got < static_cast<std::streamsize>(buf.size())) break;
  }
  if (f.bad()) return IOError("read failed: " + in.source_path);
  e.sha256 = hash.Finish();
  stats->logical_bytes += e.size;
  return e;
}

bool SameLayout(const TensorEntry& base, const TensorInfo& t) {
  return base.dtype == t.dtype && base.shape == t.shape && base.size == t.size();
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

  // Pass 1: the whole file's sha256 and each tensor's, in one sequential read.
  Sha256 file_hash;
  file_hash.Update(h.header_bytes);
  std::string buf;
  for (const auto& t : h.tensors) {
    Sha256 th;
    for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
      uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
      buf.resize(len);
      DS_RETURN_IF_ERROR(file->ReadTensorRange(t, off, len, buf.data()));
      th.Update(buf);
      file_hash.Update(buf);
    }
    TensorEntry te;
    te.name = t.name;
    te.dtype = t.dtype;
    te.shape = t.shape;
    te.offset = t.begin;
    te.size = t.size();
    te.sha256 = th.Finish();
    e.tensors.push_back(std::move(te));
  }
  e.sha256 = file_hash.Finish();

  DS_ASSIGN_OR_RETURN(auto header_chunks, PutBytesAsChunks(guard, h.header_bytes, stats, options));
  if (header_chunks.size() != 1) return Internal("header larger than one chunk");
  e.header = header_chunks[0];

  // Pass 2: encode each tensor, against its base tensor when the layout matches. The file as it will be
  // served is hashed on the way (it differs from the upload only where tensors are stored lossily).
  Sha256 served_hash;
  served_hash.Update(h.header_bytes);
  std::string base_buf;
  uint32_t stream = 0;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    if (options.cancelled && options.cancelled())
      return Unavailable("ingest cancelled: the server is stopping");
    const TensorInfo& t = h.tensors[i];
    TensorEntry& te = e.tensors[i];
    const TensorEntry* bt = base ? base->FindTensor(t.name) : nullptr;
    if (bt != nullptr && !SameLayout(*bt, t)) bt = nullptr;
    std::optional<LossyOutcome> lossy;
    if (bt != nullptr && bt->sha256 == te.sha256) {
      te.encoding = TensorEncoding::kSameAsBase;
      stats->tensors_same++;
    } else if (bt != nullptr && options.lossy) {
      // Lossy candidates are handled whole (memory: a few times the largest tensor).
      std::string ft_bytes(t.size(), '\0');
      DS_RETURN_IF_ERROR(file->ReadTensorRange(t, 0, t.size(), ft_bytes.data()));
      base_buf.resize(t.size());
      DS_RETURN_IF_ERROR(base->ReadTensor(*bt, 0, t.size(), base_buf.data()));
      auto outcome = options.lossy(t, base_buf, ft_bytes, stream++);
      if (!outcome.ok()) return outcome.status().Annotate("tensor " + t.name);
      lossy = std::move(*outcome);
    }
    if (lossy) {
      te.encoding = TensorEncoding::kLossy;
      te.sha256 = Sha256::Of(lossy->reconstructed);
      served_hash.Update(lossy->reconstructed);
      DS_ASSIGN_OR_RETURN(ChunkRef r, guard->Put(lossy->chunk, t.size(), stats));
      te.chunks.push_back(r);
      stats->tensors_lossy++;
      stats->lossy_reports.push_back(std::move(lossy->report_json));
    } else if (te.encoding != TensorEncoding::kSameAsBase) {
      te.encoding = bt ? TensorEncoding::kDelta : TensorEncoding::kStandalone;
      (bt ? stats->tensors_delta : stats->tensors_standalone)++;
      for (uint64_t off = 0; off < t.size(); off += kChunkSize) {
        uint64_t len = std::min<uint64_t>(kChunkSize, t.size() - off);
        buf.resize(len);
        DS_RETURN_IF_ERROR(file->ReadTensorRange(t, off, len, buf.data()));
        if (options.lossy) served_hash.Update(buf);
        std::string_view base_view;
        if (bt) {
          base_buf.resize(len);
          DS_RETURN_IF_ERROR(base->ReadTensor(*bt, off, len, base_buf.data()));
          base_view = base_buf;
        }
        DS_ASSIGN_OR_RETURN(ChunkRef r,
                            guard->Put(EncodeChunk(t.dtype, buf, base_view, options.encode), len, stats));
        te.chunks.push_back(r);
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
    progress->tensors_done++;
    progress->bytes_done += t.size();
    if (report) report(*progress);
  }
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

VersionReader::VersionReader(ChunkStore* store, Manifest manifest, ManifestLoader loader, TensorSource* base)
    : store_(store), manifest_(std::move(manifest)), loader_(std::move(loader)), base_(base) {
  for (const auto& f : manifest_.files) {
    for (const auto& t : f.tensors) tensors_.emplace(t.name, &t);
  }
}

const TensorEntry* VersionReader::FindTensor(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second;
}

StatusOr<TensorSource*> VersionReader::Base() {
  if (base_) return base_;
  if (!manifest_.base) return Corruption("version has delta tensors but no base");
  if (!loader_) return FailedPrecondition("no way to load the base version");
  auto m = loader_(*manifest_.base);
  if (!m.ok()) return m.status().Annotate("loading base version " + manifest_.base->ToString());
  owned_base_ = std::make_unique<VersionReader>(store_, std::move(*m), loader_);
  base_ = owned_base_.get();
  return base_;
}

StatusOr<const std::string*> VersionReader::DecodedChunk(const TensorEntry& tensor, size_t index,
                                                         uint64_t chunk_offset) {
  if (cache_valid_ && cache_index_ == index && cache_tensor_ == tensor.name) return &cache_bytes_;
  const ChunkRef& ref = tensor.chunks[index];
  DS_ASSIGN_OR_RETURN(std::string encoded, store_->Get(ref.digest));
  std::string base_bytes;
  DS_ASSIGN_OR_RETURN(bool is_delta, ChunkIsDelta(encoded));
  if (is_delta) {
    DS_ASSIGN_OR_RETURN(TensorSource * base, Base());
    const TensorEntry* bt = base->FindTensor(tensor.name);
    if (bt == nullptr || bt->size != tensor.size) return Corruption("base lacks tensor " + tensor.name);
    base_bytes.resize(ref.raw_size);
    DS_RETURN_IF_ERROR(base->ReadTensor(*bt, chunk_offset, ref.raw_size, base_bytes.data()));
  }
  cache_valid_ = false;
  DS_ASSIGN_OR_RETURN(cache_bytes_, DecodeChunk(encoded, base_bytes, ref.raw_size));
  cache_tensor_ = tensor.name;
  cache_index_ = index;
  cache_valid_ = true;
  return &cache_bytes_;
}

Status VersionReader::ReadTensor(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out) {
  if (offset + len > tensor.size || offset + len < offset)
    return OutOfRange("read past end of " + tensor.name);
  if (tensor.encoding == TensorEncoding::kSameAsBase) {
    DS_ASSIGN_OR_RETURN(TensorSource * base, Base());
    const TensorEntry* bt = base->FindTensor(tensor.name);
    if (bt == nullptr || bt->size != tensor.size) return Corruption("base lacks tensor " + tensor.name);
    return base->ReadTensor(*bt, offset, len, out);
  }
  uint64_t chunk_start = 0;
  for (size_t i = 0; i < tensor.chunks.size() && len > 0; ++i) {
    uint64_t chunk_end = chunk_start + tensor.chunks[i].raw_size;
    if (offset < chunk_end) {
      DS_ASSIGN_OR_RETURN(const std::string* bytes, DecodedChunk(tensor, i, chunk_start));
      uint64_t from = offset - chunk_start;
      uint64_t n = std::min<uint64_t>(len, chunk_end - offset);
      std::copy_n(bytes->data() + from, n, out);
      out += n;
      offset += n;
      len -= n;
    }
    chunk_start = chunk_end;
  }
  return len == 0 ? OkStatus() : Corruption("chunks of " + tensor.name + " are shorter than the tensor");
}

Status VersionReader::ReadChunks(const std::vector<ChunkRef>& chunks, uint64_t offset, uint64_t len,
                                 char* out) {
  uint64_t chunk_start = 0;
  for (const auto& ref : chunks) {
    uint64_t chunk_end = chunk_start + ref.raw_size;
    if (len > 0 && offset < chunk_end) {
      DS_ASSIGN_OR_RETURN(std::string encoded, store_->Get(ref.digest));
      DS_ASSIGN_OR_RETURN(std::string raw, DecodeChunk(encoded, {}, ref.raw_size));
      uint64_t n = std::min<uint64_t>(len, chunk_end - offset);
      std::copy_n(raw.data() + (offset - chunk_start), n, out);
      out += n;
      offset += n;
      len -= n;
    }
    chunk_start = chunk_end;
  }
  return len == 0 ? OkStatus() : OutOfRange("read past the end of the stored bytes");
}

StatusOr<std::unique_ptr<VersionReader>> VersionReader::Clone() {
  auto c = std::make_unique<VersionReader>(store_, manifest_, loader_);
  if (owned_base_ == nullptr && base_ != nullptr) {
    c->base_ = base_;  // given by the caller: shared
  } else if (manifest_.base) {
    DS_ASSIGN_OR_RETURN(TensorSource * b, Base());  // loads the base manifest here, not in a worker
    (void)b;
    DS_ASSIGN_OR_RETURN(c->owned_base_, owned_base_->Clone());
    c->base_ = c->owned_base_.get();
  }
  return c;
}

FileStreamer::FileStreamer(VersionReader* reader, const FileEntry* file, uint64_t begin, uint64_t end,
                           bool verify, size_t workers)
    : reader_(reader),
      file_(file),
      pos_(begin),
      end_(std::min(end, file->size)),
      delivered_(begin),
      verify_(verify && begin == 0 && end >= file->size),
      workers_(workers != 0 ? workers
                            : std::clamp<size_t>(std::thread::hardware_concurrency(), 1, kMaxStreamWorkers)) {
  if (file->kind == FileKind::kBlob) {
    segments_.push_back({0, file->size, nullptr, &file->chunks});
  } else {
    header_ = {*file->header};
    segments_.push_back({0, file->header->raw_size, nullptr, &header_});
    for (const auto& t : file->tensors)
      segments_.push_back({file->header->raw_size + t.offset, t.size, &t, nullptr});
  }
}

StatusOr<std::optional<FileStreamer::Piece>> FileStreamer::Plan() {
  while (pos_ < end_) {
    if (segment_ >= segments_.size())
      return Corruption("manifest of " + file_->path + " is shorter than the file");
    const Segment& seg = segments_[segment_];
    if (pos_ >= seg.begin + seg.size) {
      ++segment_;
      continue;
    }
    uint64_t in_seg = pos_ - seg.begin;
    uint64_t n =
        std::min<uint64_t>(kChunkSize - in_seg % kChunkSize, std::min(end_, seg.begin + seg.size) - pos_);
    pos_ += n;
    return std::optional<Piece>(Piece{&seg, in_seg, n});
  }
  return std::optional<Piece>();
}

Status FileStreamer::Read(VersionReader* reader, const Piece& p, std::string* out) {
  out->assign(p.size, '\0');
  return p.segment->tensor ? reader->ReadTensor(*p.segment->tensor, p.in_segment, p.size, out->data())
                           : reader->ReadChunks(*p.segment->chunks, p.in_segment, p.size, out->data());
}

Status FileStreamer::Fill() {
  std::vector<Piece> batch;
  while (batch.size() < workers_) {
    DS_ASSIGN_OR_RETURN(std::optional<Piece> p, Plan());
    if (!p) break;
    batch.push_back(*p);
  }
  if (batch.empty()) return OkStatus();
  std::vector<std::string> out(batch.size());
  std::vector<Status> status(batch.size());
  if (batch.size() == 1) {
    status[0] = Read(reader_, batch[0], &out[0]);
  } else {
    while (clones_.size() + 1 < batch.size()) {
      DS_ASSIGN_OR_RETURN(auto c, reader_->Clone());
      clones_.push_back(std::move(c));
    }
    std::vector<std::thread> threads;
    threads.reserve(batch.size() - 1);
    for (size_t i = 1; i < batch.size(); ++i) {
      threads.emplace_back([&, i] { status[i] = Read(clones_[i - 1].get(), batch[i], &out[i]); });
    }
    status[0] = Read(reader_, batch[0], &out[0]);
    for (auto& t : threads) t.join();
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    DS_RETURN_IF_ERROR(status[i]);
    ready_.push_back(std::move(out[i]));
  }
  return OkStatus();
}

StatusOr<std::string> FileStreamer::Next() {
  if (ready_.empty()) DS_RETURN_IF_ERROR(Fill());
  if (ready_.empty()) return std::string();
  std::string piece = std::move(ready_.front());
  ready_.pop_front();
  delivered_ += piece.size();
  if (verify_) {
    hash_.Update(piece);
    if (delivered_ == end_ && hash_.Finish() != file_->sha256) {
      return Corruption("rebuilt " + file_->path + " does not match its sha256");
    }
  }
  return piece;
}

Status VersionReader::StreamFile(const FileEntry& file, uint64_t begin, uint64_t end, const ByteSink& sink,
                                 bool verify) {
  if (begin > end || end > file.size) return OutOfRange("range outside of " + file.path);
  if (verify && file.size == 0 && Sha256::Of("") != file.sha256) {
    return Corruption("empty file digest mismatch");
  }
  FileStreamer streamer(this, &file, begin, end, verify);
  while (true) {
    DS_ASSIGN_OR_RETURN(std::string piece, streamer.Next());
    if (piece.empty()) return OkStatus();
    DS_RETURN_IF_ERROR(sink(piece));
  }
}

StatusOr<std::unique_ptr<FilesTensorSource>> FilesTensorSource::Open(const std::vector<std::string>& paths) {
  auto src = std::make_unique<FilesTensorSource>();
  for (const auto& path : paths) {
    auto opened = SafetensorsFile::Open(path);
    if (!opened.ok()) return opened.status().Annotate(path);
    auto file = std::move(*opened);
    Sha256 hash;
    std::string buf;
    const auto& h = file->header();
    for (uint64_t off = 0; off < h.file_size(); off += kChunkSize) {
      buf.resize(std::min<uint64_t>(kChunkSize, h.file_size() - off));
      DS_RETURN_IF_ERROR(file->ReadAt(off, buf.size(), buf.data()));
      hash.Update(buf);
    }
    src->digests_.push_back(hash.Finish());
    for (const auto& t : h.tensors) {
      TensorEntry e;
      e.name = t.name;
      e.dtype = t.dtype;
      e.shape = t.shape;
      e.offset = t.begin;
      e.size = t.size();
      if (!src->tensors_.emplace(t.name, std::make_pair(e, file.get())).second) {
        return InvalidArgument("tensor " + t.name + " appears in two base files");
      }
    }
    src->files_.push_back(std::move(file));
  }
  return src;
}

const TensorEntry* FilesTensorSource::FindTensor(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second.first;
}

Status FilesTensorSource::ReadTensor(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out) {
  auto it = tensors_.find(tensor.name);
  if (it == tensors_.end()) return NotFound("base files lack tensor " + tensor.name);
  const SafetensorsFile* f = it->second.second;
  const TensorInfo* info = f->header().Find(tensor.name);
  return f->ReadTensorRange(*info, offset, len, out);
}

namespace {

// The planning pass: offers the planner the tensors pass 2 of IngestSafetensors will offer the lossy hook,
// with the same stream numbers.
Status ProbeLossy(const std::vector<IngestFile>& files, VersionReader* base, const IngestOptions& options,
                  IngestProgress p, const ProgressFn& report) {
  p.phase = "planning";
  std::string ft_bytes, base_bytes;
  for (const auto& f : files) {
    if (!IsSafetensorsPath(f.path)) continue;
    DS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(f.source_path));
    uint32_t stream = 0;
    for (const TensorInfo& t : file->header().tensors) {
      if (options.cancelled && options.cancelled())
        return Unavailable("ingest cancelled: the server is stopping");
      const TensorEntry* bt = base ? base->FindTensor(t.name) : nullptr;
      if (bt != nullptr && SameLayout(*bt, t)) {
        ft_bytes.resize(t.size());
        DS_RETURN_IF_ERROR(file->ReadTensorRange(t, 0, t.size(), ft_bytes.data()));
        base_bytes.resize(t.size());
        DS_RETURN_IF_ERROR(base->ReadTensor(*bt, 0, t.size(), base_bytes.data()));
        if (ft_bytes != base_bytes) {
          DS_RETURN_IF_ERROR(options.lossy_planner.probe(t, base_bytes, ft_bytes, stream++)
                                 .Annotate(f.path + ": tensor " + t.name));
        }
      }
      p.tensors_done++;
      p.bytes_done += t.size();
      if (report) report(p);
    }
  }
  return OkStatus();
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
  if (options.lossy && options.lossy_planner.probe) {
    DS_RETURN_IF_ERROR(ProbeLossy(files, base, options, p, progress));
    DS_RETURN_IF_ERROR(options.lossy_planner.plan());
  }
  for (const auto& f : files) {
    if (m.FindFile(f.path) != nullptr) return InvalidArgument("file " + f.path + " appears twice");
    StatusOr<FileEntry> e = IsSafetensorsPath(f.path)
                                ? IngestSafetensors(&guard, f, base, stats, options, &p, progress)
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

Status RebuildFile(VersionReader* reader, const FileEntry& file, const std::string& out_path) {
  std::string tmp = out_path + ".partial";
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return IOError("cannot create " + tmp);
  Status s = reader->StreamFile(file, 0, file.size, [&](std::string_view piece) {
    out.write(piece.data(), static_cast<std::streamsize>(piece.size()));
    return out ? OkStatus() : IOError("write failed: " + tmp);
  });
  out.close();
  if (s.ok() && !out) s = IOError("write failed: " + tmp);
  if (!s.ok()) {
    std::remove(tmp.c_str());
    return s;
  }
  if (std::rename(tmp.c_str(), out_path.c_str()) != 0) return IOError("cannot rename to " + out_path);
  return OkStatus();
}

}  // namespace deltastore
