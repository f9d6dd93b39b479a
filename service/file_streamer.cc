#include "service/file_streamer.h"

#include <algorithm>

#include "service/reader.h"

namespace deltastore {

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
  // A range of one piece gains nothing from threads.
  if (end_ <= pos_ || end_ - pos_ <= kChunkSize) workers_ = 1;
}

FileStreamer::~FileStreamer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : threads_) t.join();
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
  out->resize(p.size);
  return p.segment->tensor ? reader->ReadTensor(*p.segment->tensor, p.in_segment, p.size, out->data())
                           : reader->ReadChunks(*p.segment->chunks, p.in_segment, p.size, out->data());
}

Status FileStreamer::Setup() {
  // With the file's sha256 checked at the end, which covers every chunk read for it, the chunks' own
  // digests need not be checked too: then every worker reads through a clone that skips them.
  if (verify_) {
    DS_ASSIGN_OR_RETURN(auto first, reader_->Clone());
    first->CheckChunkDigests(false);
    clones_.push_back(std::move(first));
  }
  first_ = verify_ ? clones_.front().get() : reader_;
  while (clones_.size() + (verify_ ? 0 : 1) < workers_) {
    DS_ASSIGN_OR_RETURN(auto c, first_->Clone());
    clones_.push_back(std::move(c));
  }
  if (workers_ <= 1) return OkStatus();
  threads_.reserve(workers_);
  if (!verify_) threads_.emplace_back([this] { Work(reader_); });
  for (auto& c : clones_) threads_.emplace_back([this, r = c.get()] { Work(r); });
  return OkStatus();
}

void FileStreamer::Work(VersionReader* reader) {
  const uint64_t window = workers_ + 2;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || planning_done_ || planned_ < taken_ + window; });
    if (stop_ || planning_done_) return;
    auto piece = Plan();
    const uint64_t index = planned_++;
    if (!piece.ok() || !piece->has_value()) {
      planning_done_ = true;
      if (!piece.ok())
        done_.emplace(index, piece.status());
      else
        --planned_;  // the end: no piece has this index
      ready_cv_.notify_all();
      work_cv_.notify_all();
      return;
    }
    lock.unlock();
    std::string out;
    Status s = Read(reader, **piece, &out);
    lock.lock();
    if (s.ok()) {
      done_.emplace(index, std::move(out));
    } else {
      done_.emplace(index, std::move(s));
      planning_done_ = true;  // nothing after an error is wanted
      work_cv_.notify_all();
    }
    ready_cv_.notify_all();
  }
}

StatusOr<std::string> FileStreamer::Produce() {
  if (first_ == nullptr) DS_RETURN_IF_ERROR(Setup());
  if (workers_ <= 1) {
    DS_ASSIGN_OR_RETURN(std::optional<Piece> p, Plan());
    std::string out;
    if (p) DS_RETURN_IF_ERROR(Read(first_, *p, &out));
    return out;
  }
  std::unique_lock<std::mutex> lock(mu_);
  ready_cv_.wait(lock, [&] { return done_.count(taken_) != 0 || (planning_done_ && taken_ >= planned_); });
  auto it = done_.find(taken_);
  if (it == done_.end()) return std::string();  // the end
  StatusOr<std::string> piece = std::move(it->second);
  done_.erase(it);
  ++taken_;
  work_cv_.notify_all();
  return piece;
}

StatusOr<std::string> FileStreamer::Next() {
  DS_RETURN_IF_ERROR(failed_);
  StatusOr<std::string> piece = Produce();
  if (!piece.ok()) {
    failed_ = piece.status();
    return failed_;
  }
  delivered_ += piece->size();
  if (verify_ && !piece->empty()) {
    hash_.Update(*piece);
    if (delivered_ == end_ && hash_.Finish() != file_->sha256) {
      failed_ = Corruption("rebuilt " + file_->path + " does not match its sha256");
      return failed_;
    }
  }
  return piece;
}

}  // namespace deltastore
