// FileCache (service/file_cache.h): fills, reads, the budget's least-recently-used order, damaged entries,
// and what a restart finds.
#include "service/file_cache.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/xxh128.h"
#include "tests/storage/temp_dir.h"

namespace deltastore {
namespace {

namespace fs = std::filesystem;

std::string Bytes(char c, size_t n) {
  return std::string(n, c);
}

// Fills the entry of `bytes` in two pieces; true when the cache took it.
bool Fill(FileCache* cache, const std::string& bytes) {
  auto fill = cache->Begin(Sha256::Of(bytes), bytes.size());
  if (!fill) return false;
  fill->Append(std::string_view(bytes).substr(0, bytes.size() / 2));
  fill->Append(std::string_view(bytes).substr(bytes.size() / 2));
  fill->Commit(Sha256::Of(bytes));
  return true;
}

// Reads the whole entry of `bytes` (nullopt-like "" plus a status when the cache does not have it).
StatusOr<std::string> ReadBack(FileCache* cache, const std::string& bytes) {
  auto reader = cache->Find(Sha256::Of(bytes), bytes.size());
  if (!reader) return NotFound("not cached");
  std::string out;
  while (true) {
    DS_ASSIGN_OR_RETURN(std::string piece, reader->Next());
    if (piece.empty()) return out;
    out += piece;
  }
}

// An entry's file name: "<sha256 hex>-<XXH3-128 hex>".
std::string EntryName(const std::string& bytes) {
  Xxh128 x;
  x.Update(bytes);
  return Sha256::Of(bytes).Hex() + "-" + HexEncode(x.Finish());
}

std::vector<std::string> Names(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

TEST(FileCacheTest, AFilledEntryReadsBackAndIsCounted) {
  TempDir dir;
  auto cache = FileCache::Open(dir.path().string(), 1000);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', 300);
  ASSERT_TRUE(Fill(cache->get(), a));
  EXPECT_EQ((*cache)->entries(), 1u);
  EXPECT_EQ((*cache)->bytes(), 300u);
  auto back = ReadBack(cache->get(), a);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, a);
  EXPECT_FALSE(Fill(cache->get(), a)) << "held already";
  EXPECT_EQ((*cache)->Find(Sha256::Of(a), 299), nullptr) << "another size is another file";
  EXPECT_EQ(Names(dir.path()), std::vector<std::string>{EntryName(a)});
}

TEST(FileCacheTest, AnUnfinishedFillLeavesNothingAndBlocksASecondFillMeanwhile) {
  TempDir dir;
  auto cache = FileCache::Open(dir.path().string(), 1000);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', 300);
  {
    auto fill = (*cache)->Begin(Sha256::Of(a), a.size());
    ASSERT_NE(fill, nullptr);
    EXPECT_EQ((*cache)->Begin(Sha256::Of(a), a.size()), nullptr) << "one fill of an entry at a time";
    fill->Append(std::string_view(a).substr(0, 100));
    fill->Commit(Sha256::Of(a));  // 100 of 300 bytes: not published
  }
  EXPECT_EQ((*cache)->entries(), 0u);
  EXPECT_TRUE(Names(dir.path()).empty());
  EXPECT_TRUE(Fill(cache->get(), a)) << "the next fill may start";
}

TEST(FileCacheTest, TheLeastRecentlyUsedEntriesGoWhenTheBudgetIsExceeded) {
  TempDir dir;
  auto cache = FileCache::Open(dir.path().string(), 1000);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', 400), b = Bytes('b', 400), c = Bytes('c', 400);
  ASSERT_TRUE(Fill(cache->get(), a));
  ASSERT_TRUE(Fill(cache->get(), b));
  ASSERT_TRUE(ReadBack(cache->get(), a).ok());  // a is now more recent than b
  ASSERT_TRUE(Fill(cache->get(), c));
  EXPECT_TRUE(ReadBack(cache->get(), a).ok());
  EXPECT_FALSE(ReadBack(cache->get(), b).ok());
  EXPECT_TRUE(ReadBack(cache->get(), c).ok());
  EXPECT_EQ((*cache)->bytes(), 800u);
  EXPECT_EQ((*cache)->Begin(Sha256::Of(Bytes('d', 1001)), 1001), nullptr) << "larger than the budget";
}

TEST(FileCacheTest, ADamagedEntryFailsBeforeItsLastPieceAndIsDropped) {
  TempDir dir;
  auto cache = FileCache::Open(dir.path().string(), uint64_t{64} << 20);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', (uint64_t{9} << 20) + 5);  // three pieces
  ASSERT_TRUE(Fill(cache->get(), a));
  {
    std::fstream f(dir.path() / EntryName(a), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12345);
    f.put('b');
  }
  auto reader = (*cache)->Find(Sha256::Of(a), a.size());
  ASSERT_NE(reader, nullptr);
  size_t pieces = 0;
  Status end;
  while (true) {
    auto piece = reader->Next();
    if (!piece.ok()) {
      end = piece.status();
      break;
    }
    ASSERT_FALSE(piece->empty()) << "a damaged entry must not read to its end";
    ++pieces;
  }
  EXPECT_EQ(pieces, 2u) << "the last piece is withheld";
  EXPECT_EQ(end.code(), StatusCode::kCorruption) << end.ToString();
  EXPECT_EQ((*cache)->entries(), 0u);
  EXPECT_TRUE(Names(dir.path()).empty());
}

TEST(FileCacheTest, ARestartKeepsEntriesDropsTemporaryFilesAndABudgetOfZeroEmptiesIt) {
  TempDir dir;
  const std::string a = Bytes('a', 400), b = Bytes('b', 400);
  {
    auto cache = FileCache::Open(dir.path().string(), 1000);
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE(Fill(cache->get(), a));
    ASSERT_TRUE(Fill(cache->get(), b));
  }
  std::ofstream(dir.path() / ("tmp-" + Sha256::Of(a).Hex())) << "a fill cut short by a crash";
  std::ofstream(dir.path() / "stray") << "not an entry";
  {
    auto cache = FileCache::Open(dir.path().string(), 1000);
    ASSERT_TRUE(cache.ok());
    EXPECT_EQ((*cache)->entries(), 2u);
    EXPECT_EQ((*cache)->bytes(), 800u);
    EXPECT_EQ(*ReadBack(cache->get(), b), b);
  }
  EXPECT_EQ(Names(dir.path()).size(), 2u);
  {
    auto cache = FileCache::Open(dir.path().string(), 500);  // a smaller budget keeps the most recent
    ASSERT_TRUE(cache.ok());
    EXPECT_EQ((*cache)->entries(), 1u);
    EXPECT_TRUE(ReadBack(cache->get(), b).ok());
  }
  auto off = FileCache::Open(dir.path().string(), 0);
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(Names(dir.path()).empty());
}

TEST(FileCacheTest, AnAdoptedFileIsLinkedNotCopied) {
  TempDir dir;
  auto cache = FileCache::Open((dir.path() / "cache").string(), 1000);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', 300);
  const fs::path upload = dir.path() / "upload";
  std::ofstream(upload, std::ios::binary) << a;
  Xxh128 x;
  x.Update(a);
  (*cache)->Adopt(upload.string(), Sha256::Of(a), a.size() + 1, x.Finish());  // not the size it has
  EXPECT_EQ((*cache)->entries(), 0u);
  for (int i = 0; i < 2; ++i) (*cache)->Adopt(upload.string(), Sha256::Of(a), a.size(), x.Finish());
  EXPECT_EQ((*cache)->entries(), 1u);
  EXPECT_EQ((*cache)->bytes(), 300u);
  EXPECT_EQ(Names(dir.path() / "cache"), std::vector<std::string>{EntryName(a)});
  EXPECT_EQ(fs::hard_link_count(upload), 2u) << "the upload's own bytes, not a copy";
  fs::remove(upload);  // the job consumes its upload: the entry keeps the bytes
  EXPECT_EQ(*ReadBack(cache->get(), a), a);
  const std::string big = Bytes('b', 1001);
  std::ofstream(upload, std::ios::binary) << big;
  (*cache)->Adopt(upload.string(), Sha256::Of(big), big.size(), x.Finish());
  EXPECT_EQ((*cache)->entries(), 1u) << "larger than the budget";
}

TEST(FileCacheTest, AFillTakesOnlyTheDigestItWasBegunFor) {
  TempDir dir;
  auto cache = FileCache::Open(dir.path().string(), 1000);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', 300), b = Bytes('b', 300);
  auto fill = (*cache)->Begin(Sha256::Of(a), a.size());
  ASSERT_NE(fill, nullptr);
  fill->Append(b);
  fill->Commit(Sha256::Of(b));
  EXPECT_EQ((*cache)->entries(), 0u);
  EXPECT_TRUE(Names(dir.path()).empty());
}

TEST(FileCacheTest, FilesOfOtherNamesOrSizesAreDropped) {
  TempDir dir;
  const std::string a = Bytes('a', 400), b = Bytes('b', 400);
  {
    auto cache = FileCache::Open(dir.path().string(), 1000);
    ASSERT_TRUE(cache.ok());
    ASSERT_TRUE(Fill(cache->get(), a));
  }
  // An entry of the first format (named by its sha256 alone, a trailer after its bytes).
  std::ofstream(dir.path() / Sha256::Of(b).Hex(), std::ios::binary) << b << std::string(32, 'T');
  auto cache = FileCache::Open(dir.path().string(), 1000);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ((*cache)->entries(), 1u);
  EXPECT_EQ(Names(dir.path()), std::vector<std::string>{EntryName(a)});
  // Cut short behind the cache's back: the entry is forgotten when it is next looked up.
  fs::resize_file(dir.path() / EntryName(a), a.size() - 1);
  EXPECT_EQ((*cache)->Find(Sha256::Of(a), a.size()), nullptr);
  EXPECT_EQ((*cache)->entries(), 0u);
  EXPECT_TRUE(Names(dir.path()).empty());
}

TEST(FileCacheTest, AsAFileSpanAnEntryIsClearedOnlyOnceItsChecksumMatched) {
  TempDir dir;
  auto cache = FileCache::Open(dir.path().string(), uint64_t{64} << 20);
  ASSERT_TRUE(cache.ok());
  const std::string a = Bytes('a', (uint64_t{9} << 20) + 5);
  ASSERT_TRUE(Fill(cache->get(), a));
  {
    auto span = (*cache)->Find(Sha256::Of(a), a.size());
    ASSERT_NE(span, nullptr);
    EXPECT_EQ(span->size(), a.size());
    std::string head(100, '\0');
    ASSERT_EQ(::pread(span->fd(), head.data(), head.size(), 0), 100);
    EXPECT_EQ(head, a.substr(0, 100)) << "the descriptor reads the entry's bytes";
    EXPECT_TRUE(span->Clear(a.size() - 1).ok());
    EXPECT_TRUE(span->Clear(a.size()).ok());
  }
  {
    std::fstream f(dir.path() / EntryName(a), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(uint64_t{5} << 20);
    f.put('b');
  }
  auto span = (*cache)->Find(Sha256::Of(a), a.size());
  ASSERT_NE(span, nullptr);
  EXPECT_TRUE(span->Clear(1).ok()) << "bytes before the last go out while the entry is hashed";
  Status last = span->Clear(a.size());
  EXPECT_EQ(last.code(), StatusCode::kCorruption) << last.ToString();
  EXPECT_EQ((*cache)->entries(), 0u);
  EXPECT_TRUE(Names(dir.path()).empty());
}

}  // namespace
}  // namespace deltastore
