#include "service/reader.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <thread>

namespace deltastore {

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
