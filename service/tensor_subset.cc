#include "service/tensor_subset.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "codec/chunk_codec.h"
#include "codec/safetensors.h"

namespace deltastore {

namespace {

// Counts the reads that go through it (one reader's, so no locking); forwards everything.
class CountingChunkStore : public ChunkStore {
 public:
  CountingChunkStore(ChunkStore* inner, ChunkReadStats* stats) : inner_(inner), stats_(stats) {}
  StatusOr<PutResult> Put(std::string_view bytes) override { return inner_->Put(bytes); }
  StatusOr<std::string> Get(const Digest& digest) override {
    auto r = inner_->Get(digest);
    if (r.ok()) {
      ++stats_->chunks;
      stats_->stored_bytes += r->size();
    }
    return r;
  }
  StatusOr<bool> Has(const Digest& digest) override { return inner_->Has(digest); }
  Status Ref(const Digest& digest, int64_t count) override { return inner_->Ref(digest, count); }
  Status Unref(const Digest& digest, int64_t count) override { return inner_->Unref(digest, count); }
  StatusOr<int64_t> RefCount(const Digest& digest) override { return inner_->RefCount(digest); }
  StatusOr<GcStats> Gc() override { return inner_->Gc(); }
  StatusOr<ChunkStoreStats> Stats() override { return inner_->Stats(); }
  Status ForEach(const std::function<Status(const Digest&, int64_t, uint64_t)>& fn) override {
    return inner_->ForEach(fn);
  }
  Status SetRefCount(const Digest& digest, int64_t count) override {
    return inner_->SetRefCount(digest, count);
  }
  Status PutUnverified(const Digest& digest, std::string_view bytes) override {
    return inner_->PutUnverified(digest, bytes);
  }

 private:
  ChunkStore* inner_;
  ChunkReadStats* stats_;
};

Status WriteAll(std::FILE* f, std::string_view bytes, Sha256* hash) {
  hash->Update(bytes);
  if (bytes.empty()) return OkStatus();
  if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size())
    return IOError("cannot write the temporary file: " + std::string(std::strerror(errno)));
  return OkStatus();
}

// The asked tensors of `file` in data order; kTensorUnknown listing the names it does not hold.
StatusOr<std::vector<const TensorEntry*>> Select(const FileEntry& file,
                                                 const std::vector<std::string>& names) {
  std::map<std::string_view, const TensorEntry*> by_name;
  for (const auto& t : file.tensors) by_name.emplace(t.name, &t);
  std::set<const TensorEntry*> chosen;
  std::string unknown;
  size_t n_unknown = 0;
  for (const auto& n : names) {
    auto it = by_name.find(n);
    if (it != by_name.end()) {
      chosen.insert(it->second);
    } else if (++n_unknown <= 20) {
      unknown += (unknown.empty() ? "" : ", ") + n.substr(0, 200);
    }
  }
  if (n_unknown > 0) {
    std::string more = n_unknown > 20 ? " and " + std::to_string(n_unknown - 20) + " more" : "";
    return TensorUnknown(file.path + " has no tensor" + (n_unknown > 1 ? "s " : " ") + unknown + more);
  }
  std::vector<const TensorEntry*> out;
  for (const auto& t : file.tensors)
    if (chosen.count(&t)) out.push_back(&t);
  return out;
}

}  // namespace

StatusOr<std::vector<std::string>> ParseTensorList(std::string_view list) {
  std::vector<std::string> names;
  std::set<std::string, std::less<>> seen;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    std::string_view item = list.substr(start, comma - start);
    if (!item.empty() && seen.insert(std::string(item)).second) {
      if (names.size() == kMaxSubsetTensors)
        return TensorsInvalid("at most " + std::to_string(kMaxSubsetTensors) + " tensors per request");
      names.emplace_back(item);
    }
    start = comma + 1;
  }
  if (names.empty()) return TensorsInvalid("tensors must name at least one tensor");
  return names;
}

TensorSubset::~TensorSubset() {
  if (file_ != nullptr) std::fclose(file_);
}

StatusOr<std::unique_ptr<TensorSubset>> TensorSubset::Build(ChunkStore* store, const Manifest& manifest,
                                                            ManifestLoader loader, const FileEntry& file,
                                                            const std::vector<std::string>& names) {
  if (file.kind != FileKind::kSafetensors || !file.header) {
    return TensorsInvalid(file.path + " is not a safetensors file");
  }
  DS_ASSIGN_OR_RETURN(std::vector<const TensorEntry*> tensors, Select(file, names));
  std::unique_ptr<TensorSubset> out(new TensorSubset());
  out->tensors_ = tensors.size();
  CountingChunkStore counting(store, &out->reads_);
  VersionReader reader(&counting, manifest, std::move(loader));

  // The original header gives the metadata; the new one lays the tensors out contiguously.
  std::string header(file.header->raw_size, '\0');
  DS_RETURN_IF_ERROR(reader.ReadChunks({*file.header}, 0, header.size(), header.data()));
  DS_ASSIGN_OR_RETURN(SafetensorsHeader original, ParseSafetensorsHeader(std::move(header), file.size));
  std::vector<TensorSpec> specs;
  specs.reserve(tensors.size());
  for (const TensorEntry* t : tensors) specs.push_back({t->name, t->dtype, t->shape});
  DS_ASSIGN_OR_RETURN(SafetensorsHeader h, BuildSafetensorsHeader(specs, original.metadata));

  out->file_ = std::tmpfile();
  if (out->file_ == nullptr)
    return IOError("cannot create a temporary file: " + std::string(std::strerror(errno)));
  Sha256 hash;
  DS_RETURN_IF_ERROR(WriteAll(out->file_, h.header_bytes, &hash));
  std::string buf;
  for (const TensorEntry* t : tensors) {
    Sha256 tensor_hash;
    for (uint64_t off = 0; off < t->size; off += kChunkSize) {
      buf.resize(std::min<uint64_t>(kChunkSize, t->size - off));
      DS_RETURN_IF_ERROR(reader.ReadTensor(*t, off, buf.size(), buf.data()));
      tensor_hash.Update(buf);
      DS_RETURN_IF_ERROR(WriteAll(out->file_, buf, &hash));
    }
    if (tensor_hash.Finish() != t->sha256)
      return Corruption("tensor " + t->name + " rebuilt with a wrong sha256");
  }
  if (std::fflush(out->file_) != 0)
    return IOError("cannot write the temporary file: " + std::string(std::strerror(errno)));
  out->size_ = h.file_size();
  out->sha256_ = hash.Finish();
  return out;
}

StatusOr<std::string> TensorSubset::Read(uint64_t offset, uint64_t len) const {
  if (offset >= size_) return std::string();
  std::string out(std::min(len, size_ - offset), '\0');
  size_t done = 0;
  int fd = fileno(file_);
  while (done < out.size()) {
    ssize_t n = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IOError("cannot read the temporary file: " + std::string(std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  return out;
}

}  // namespace deltastore
