// FaultInjectingChunkStore: a ChunkStore decorator that injects write errors, read errors, bit flips and
// "disk full", deterministically from a seed. Failed writes never reach the inner store, and flipped bits
// are caught by re-verifying the digest, so corrupted bytes are never returned.

#include <mutex>
#include <random>
#include <string>
#include <utility>

#include "storage/stores.h"

namespace deltastore {

class FaultInjectingChunkStore final : public ChunkStore {
 public:
  FaultInjectingChunkStore(std::shared_ptr<ChunkStore> inner, FaultPlan plan)
      : inner_(std::move(inner)), plan_(plan), rng_(plan.seed) {}

  StatusOr<PutResult> Put(std::string_view bytes) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Puts in flight count against the limit, so concurrent callers never exceed it.
      if (plan_.fail_after_puts >= 0 && successful_puts_ + pending_puts_ >= plan_.fail_after_puts) {
        return ResourceExhausted("disk full (injected)");
      }
      if (Roll(plan_.write_error_rate)) return IOError("write error (injected)");
      ++pending_puts_;
    }
    auto result = inner_->Put(bytes);
    std::lock_guard<std::mutex> lock(mu_);
    --pending_puts_;
    if (result.ok()) ++successful_puts_;
    return result;
  }

  StatusOr<std::string> Get(const Digest& digest) override {
    bool flip = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (Roll(plan_.read_error_rate)) return IOError("read error (injected)");
      flip = Roll(plan_.bitflip_rate);
    }
    DS_ASSIGN_OR_RETURN(std::string bytes, inner_->Get(digest));
    if (!flip || bytes.empty()) return bytes;
    // The bit flips "on disk": verify again, as a real read path would, and refuse the bytes.
    uint64_t bit;
    {
      std::lock_guard<std::mutex> lock(mu_);
      bit = std::uniform_int_distribution<uint64_t>(0, bytes.size() * 8 - 1)(rng_);
    }
    bytes[bit / 8] = static_cast<char>(static_cast<uint8_t>(bytes[bit / 8]) ^ (1u << (bit % 8)));
    if (Sha256::Of(bytes) != digest) {
      return Corruption("chunk " + digest.ToString() + ": stored bytes do not match their digest (injected)");
    }
    return bytes;  // unreachable in practice: a one-bit change always changes the sha256
  }

  StatusOr<bool> Has(const Digest& digest) override { return inner_->Has(digest); }
  Status Ref(const Digest& digest, int64_t count) override { return inner_->Ref(digest, count); }
  Status Unref(const Digest& digest, int64_t count) override { return inner_->Unref(digest, count); }
  StatusOr<int64_t> RefCount(const Digest& digest) override { return inner_->RefCount(digest); }
  StatusOr<GcStats> Gc() override { return inner_->Gc(); }
  StatusOr<ChunkStoreStats> Stats() override { return inner_->Stats(); }
  Status ForEach(const std::function<Status(const Digest&, int64_t refcount, uint64_t size)>& fn) override {
    return inner_->ForEach(fn);
  }
  Status SetRefCount(const Digest& digest, int64_t count) override {
    return inner_->SetRefCount(digest, count);
  }

 private:
  // Requires mu_. Rates <= 0 never fire and >= 1 always do (without consuming randomness).
  bool Roll(double rate) {
    if (rate <= 0) return false;
    if (rate >= 1) return true;
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < rate;
  }

  std::shared_ptr<ChunkStore> inner_;
  const FaultPlan plan_;
  std::mutex mu_;
  std::mt19937_64 rng_;
  int64_t successful_puts_ = 0;
  int64_t pending_puts_ = 0;
};

std::unique_ptr<ChunkStore> NewFaultInjectingChunkStore(std::shared_ptr<ChunkStore> inner, FaultPlan plan) {
  return std::make_unique<FaultInjectingChunkStore>(std::move(inner), plan);
}

}  // namespace deltastore
