// Fault-injecting decorators over ChunkStore and MetaStore: write errors, read errors, bit flips,
// "disk full", and torn writes followed by a crash, deterministically from a seed. Failed writes never
// reach the inner store; flipped bits are caught by re-verifying the digest, so corrupted bytes are never
// returned; a torn write leaves in the inner store exactly what a crash mid-write would (a prefix of a
// chunk under its full digest, or the first ops of a metadata batch), and the wrappers then behave as a
// dead process: every call fails, nothing more is written. Tests reopen the inner stores to recover.

#include <mutex>
#include <random>
#include <string>
#include <utility>

#include "storage/stores.h"

namespace deltastore {

namespace {

// The plan and its progress, shared by the wrappers of one simulated process.
struct FaultState {
  explicit FaultState(FaultPlan p) : plan(std::move(p)), rng(plan.seed) {}

  // Requires mu. Rates <= 0 never fire and >= 1 always do (without consuming randomness).
  bool Roll(double rate) {
    if (rate <= 0) return false;
    if (rate >= 1) return true;
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng) < rate;
  }
  // Requires mu.
  Status Dead() const {
    return IOError("store unavailable: the process crashed after a torn write (injected); reopen it");
  }
  size_t Kept(size_t n) const {
    double keep = plan.torn_keep < 0 ? 0 : (plan.torn_keep > 1 ? 1 : plan.torn_keep);
    size_t k = static_cast<size_t>(static_cast<double>(n) * keep);
    return k < n ? k : (n == 0 ? 0 : n - 1);  // a torn write never persists all of itself
  }

  const FaultPlan plan;
  std::mutex mu;
  std::mt19937_64 rng;
  int64_t puts_started = 0;
  int64_t successful_puts = 0;
  int64_t pending_puts = 0;
  bool commit_torn = false;
  bool crashed = false;
};

}  // namespace

class FaultInjectingChunkStore final : public ChunkStore {
 public:
  FaultInjectingChunkStore(std::shared_ptr<ChunkStore> inner, std::shared_ptr<FaultState> state)
      : inner_(std::move(inner)), st_(std::move(state)) {}

  StatusOr<PutResult> Put(std::string_view bytes) override {
    bool tear = false;
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      if (st_->crashed) return st_->Dead();
      // Puts in flight count against the limit, so concurrent callers never exceed it.
      if (st_->plan.fail_after_puts >= 0 &&
          st_->successful_puts + st_->pending_puts >= st_->plan.fail_after_puts) {
        return DiskFull("disk full (injected)");
      }
      if (st_->Roll(st_->plan.write_error_rate)) return IOError("write error (injected)");
      tear = st_->puts_started++ == st_->plan.torn_put_at;
      if (tear) st_->crashed = true;  // from here on, nothing else reaches the inner store
      if (!tear) ++st_->pending_puts;
    }
    if (tear) return TornPut(bytes);
    auto result = inner_->Put(bytes);
    std::lock_guard<std::mutex> lock(st_->mu);
    --st_->pending_puts;
    if (result.ok()) ++st_->successful_puts;
    return result;
  }

  StatusOr<std::string> Get(const Digest& digest) override {
    bool flip = false;
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      if (st_->crashed) return st_->Dead();
      if (st_->Roll(st_->plan.read_error_rate)) return IOError("read error (injected)");
      flip = st_->Roll(st_->plan.bitflip_rate);
    }
    DS_ASSIGN_OR_RETURN(std::string bytes, inner_->Get(digest));
    if (!flip || bytes.empty()) return bytes;
    // The bit flips "on disk": verify again, as a real read path would, and refuse the bytes.
    uint64_t bit;
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      bit = std::uniform_int_distribution<uint64_t>(0, bytes.size() * 8 - 1)(st_->rng);
    }
    bytes[bit / 8] = static_cast<char>(static_cast<uint8_t>(bytes[bit / 8]) ^ (1u << (bit % 8)));
    if (Sha256::Of(bytes) != digest) {
      return Corruption("chunk " + digest.ToString() + ": stored bytes do not match their digest (injected)");
    }
    return bytes;  // unreachable in practice: a one-bit change always changes the sha256
  }

  StatusOr<bool> Has(const Digest& digest) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Has(digest);
  }
  Status Ref(const Digest& digest, int64_t count) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Ref(digest, count);
  }
  Status Unref(const Digest& digest, int64_t count) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Unref(digest, count);
  }
  StatusOr<int64_t> RefCount(const Digest& digest) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->RefCount(digest);
  }
  StatusOr<GcStats> Gc() override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Gc();
  }
  StatusOr<ChunkStoreStats> Stats() override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Stats();
  }
  Status ForEach(const std::function<Status(const Digest&, int64_t refcount, uint64_t size)>& fn) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->ForEach(fn);
  }
  Status SetRefCount(const Digest& digest, int64_t count) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->SetRefCount(digest, count);
  }
  Status PutUnverified(const Digest& digest, std::string_view bytes) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->PutUnverified(digest, bytes);
  }

 private:
  Status Alive() {
    std::lock_guard<std::mutex> lock(st_->mu);
    return st_->crashed ? st_->Dead() : OkStatus();
  }

  // The crash came mid-write. A chunk already present only gains a reference, which is one atomic
  // record: the tear loses it. A new chunk's record is cut: a prefix of its bytes lands under the full
  // digest, counted once, as the store's own write would have counted it.
  StatusOr<PutResult> TornPut(std::string_view bytes) {
    const Digest digest = Sha256::Of(bytes);
    const size_t kept = st_->Kept(bytes.size());
    auto present = inner_->Has(digest);
    if (present.ok() && !*present) DS_RETURN_IF_ERROR(inner_->PutUnverified(digest, bytes.substr(0, kept)));
    return IOError("torn write of chunk " + digest.ToString() + ": " + std::to_string(kept) + " of " +
                   std::to_string(bytes.size()) + " bytes persisted, then the process crashed (injected)");
  }

  std::shared_ptr<ChunkStore> inner_;
  std::shared_ptr<FaultState> st_;
};

namespace {

class FaultInjectingMetaStore final : public MetaStore {
 public:
  FaultInjectingMetaStore(std::shared_ptr<MetaStore> inner, std::shared_ptr<FaultState> state)
      : inner_(std::move(inner)), st_(std::move(state)) {}

  StatusOr<std::string> Get(std::string_view ns, std::string_view key) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Get(ns, key);
  }

  Status Commit(const MetaBatch& batch) override {
    bool tear = false;
    {
      std::lock_guard<std::mutex> lock(st_->mu);
      if (st_->crashed) return st_->Dead();
      if (st_->Roll(st_->plan.write_error_rate)) return IOError("write error (injected)");
      if (!st_->commit_torn && st_->plan.tear_commit_if && st_->plan.tear_commit_if(batch)) {
        tear = true;
        st_->commit_torn = true;
        st_->crashed = true;
      }
    }
    if (!tear) return inner_->Commit(batch);
    MetaBatch first;
    const size_t kept = st_->Kept(batch.ops.size());
    first.ops.assign(batch.ops.begin(), batch.ops.begin() + static_cast<std::ptrdiff_t>(kept));
    first.expects = batch.expects;
    DS_RETURN_IF_ERROR(inner_->Commit(first));
    return IOError("torn metadata commit: " + std::to_string(kept) + " of " +
                   std::to_string(batch.ops.size()) +
                   " operations applied, then the process crashed (injected)");
  }

  Status Scan(std::string_view ns, std::string_view prefix, std::string_view start_after,
              const std::function<bool(std::string_view key, std::string_view value)>& fn) override {
    DS_RETURN_IF_ERROR(Alive());
    return inner_->Scan(ns, prefix, start_after, fn);
  }

 private:
  Status Alive() {
    std::lock_guard<std::mutex> lock(st_->mu);
    return st_->crashed ? st_->Dead() : OkStatus();
  }

  std::shared_ptr<MetaStore> inner_;
  std::shared_ptr<FaultState> st_;
};

}  // namespace

std::unique_ptr<ChunkStore> NewFaultInjectingChunkStore(std::shared_ptr<ChunkStore> inner, FaultPlan plan) {
  return std::make_unique<FaultInjectingChunkStore>(std::move(inner),
                                                    std::make_shared<FaultState>(std::move(plan)));
}

std::unique_ptr<MetaStore> NewFaultInjectingMetaStore(std::shared_ptr<MetaStore> inner, FaultPlan plan) {
  return std::make_unique<FaultInjectingMetaStore>(std::move(inner),
                                                   std::make_shared<FaultState>(std::move(plan)));
}

Stores NewFaultInjectingStores(Stores inner, FaultPlan plan) {
  auto state = std::make_shared<FaultState>(std::move(plan));
  Stores out;
  out.chunks = std::make_shared<FaultInjectingChunkStore>(std::move(inner.chunks), state);
  out.meta = std::make_shared<FaultInjectingMetaStore>(std::move(inner.meta), state);
  out.objects = std::move(inner.objects);  // upload bytes: no faults injected there
  return out;
}

}  // namespace deltastore
