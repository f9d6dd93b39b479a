#include "service/reader.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

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
  owned_base_->check_digests_ = check_digests_;
  base_ = owned_base_.get();
  return base_;
}

StatusOr<std::string> VersionReader::Fetch(const Digest& digest) {
  return check_digests_ ? store_->Get(digest) : store_->GetUnverified(digest);
}

StatusOr<std::string> VersionReader::FetchChunk(const TensorEntry& tensor, size_t index,
                                                uint64_t chunk_offset, std::string_view* base_bytes) {
  const ChunkRef& ref = tensor.chunks[index];
  DS_ASSIGN_OR_RETURN(std::string encoded, Fetch(ref.digest));
  *base_bytes = {};
  DS_ASSIGN_OR_RETURN(bool is_delta, ChunkIsDelta(encoded));
  if (is_delta) {
    DS_ASSIGN_OR_RETURN(TensorSource * base, Base());
    const TensorEntry* bt = base->FindTensor(tensor.name);
    if (bt == nullptr || bt->size != tensor.size) return Corruption("base lacks tensor " + tensor.name);
    base_scratch_.resize(ref.raw_size);  // reused: no new allocation or zero-fill from piece to piece
    DS_RETURN_IF_ERROR(base->ReadTensor(*bt, chunk_offset, ref.raw_size, base_scratch_.data()));
    *base_bytes = base_scratch_;
  }
  return encoded;
}

StatusOr<const std::string*> VersionReader::DecodedChunk(const TensorEntry& tensor, size_t index,
                                                         uint64_t chunk_offset) {
  if (cache_valid_ && cache_index_ == index && cache_tensor_ == tensor.name) return &cache_bytes_;
  std::string_view base_bytes;
  DS_ASSIGN_OR_RETURN(std::string encoded, FetchChunk(tensor, index, chunk_offset, &base_bytes));
  cache_valid_ = false;
  DS_ASSIGN_OR_RETURN(cache_bytes_, DecodeChunk(encoded, base_bytes, tensor.chunks[index].raw_size));
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
  if (tensor.encoding == TensorEncoding::kLossy && tensor.chunks.size() == 1 &&
      tensor.chunks[0].raw_size == tensor.size) {
    return ReadLossy(tensor, offset, len, out);
  }
  uint64_t chunk_start = 0;
  for (size_t i = 0; i < tensor.chunks.size() && len > 0; ++i) {
    uint64_t chunk_end = chunk_start + tensor.chunks[i].raw_size;
    if (offset == chunk_start && len >= chunk_end - chunk_start) {
      // A whole chunk (a streamed piece): decoded straight into `out`, not through the cache.
      std::string_view base_bytes;
      DS_ASSIGN_OR_RETURN(std::string encoded, FetchChunk(tensor, i, chunk_start, &base_bytes));
      DS_RETURN_IF_ERROR(DecodeChunkInto(encoded, base_bytes, out, chunk_end - chunk_start));
      out += chunk_end - chunk_start;
      offset = chunk_end;
      len -= chunk_end - chunk_start;
    } else if (offset < chunk_end) {
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

Status VersionReader::ReadLossy(const TensorEntry& tensor, uint64_t offset, uint64_t len, char* out) {
  if (len == 0) return OkStatus();
  const ChunkRef& ref = tensor.chunks[0];
  DS_ASSIGN_OR_RETURN(std::shared_ptr<const LossyRowDecoder> decoder,
                      lossy_cache_->Get(ref.digest.ToString(), [&] { return Fetch(ref.digest); }));
  if (decoder->raw_size() != tensor.size) return Corruption("chunk raw size does not match the manifest");
  const uint64_t row = decoder->row_bytes();
  const uint64_t r0 = offset / row, r1 = (offset + len + row - 1) / row;
  if (!(lossy_tensor_ == tensor.name && lossy_r0_ <= r0 && r1 <= lossy_r1_)) {
    lossy_tensor_.clear();
    DS_ASSIGN_OR_RETURN(TensorSource * base, Base());
    const TensorEntry* bt = base->FindTensor(tensor.name);
    if (bt == nullptr || bt->size != tensor.size) return Corruption("base lacks tensor " + tensor.name);
    base_scratch_.resize((r1 - r0) * row);
    DS_RETURN_IF_ERROR(base->ReadTensor(*bt, r0 * row, base_scratch_.size(), base_scratch_.data()));
    lossy_rows_.resize(base_scratch_.size());
    DS_RETURN_IF_ERROR(decoder->DecodeRows(static_cast<uint32_t>(r0), static_cast<uint32_t>(r1),
                                           base_scratch_, lossy_rows_.data()));
    lossy_tensor_ = tensor.name;
    lossy_r0_ = r0;
    lossy_r1_ = r1;
  }
  std::copy_n(lossy_rows_.data() + (offset - lossy_r0_ * row), len, out);
  return OkStatus();
}

Status VersionReader::ReadChunks(const std::vector<ChunkRef>& chunks, uint64_t offset, uint64_t len,
                                 char* out) {
  uint64_t chunk_start = 0;
  for (const auto& ref : chunks) {
    uint64_t chunk_end = chunk_start + ref.raw_size;
    if (len > 0 && offset < chunk_end) {
      DS_ASSIGN_OR_RETURN(std::string encoded, Fetch(ref.digest));
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

void VersionReader::CheckChunkDigests(bool on) {
  check_digests_ = on;
  if (owned_base_) owned_base_->CheckChunkDigests(on);
}

StatusOr<std::unique_ptr<VersionReader>> VersionReader::Clone() {
  auto c = std::make_unique<VersionReader>(store_, manifest_, loader_);
  c->check_digests_ = check_digests_;
  c->lossy_cache_ = lossy_cache_;
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
