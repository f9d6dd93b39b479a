// The Prometheus writer and request metrics, the /ui renderer's escaping, and the audit routes
// through the router.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "api/metrics.h"
#include "api/ui.h"

namespace deltastore::api {
namespace {

// Every line is a comment (# HELP/# TYPE) or `name{label="v",...} value`; returns the samples.
std::map<std::string, double> ParseExposition(const std::string& text) {
  static const std::regex sample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*")*\})? (\S+)$)");
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) continue;
    std::smatch m;
    EXPECT_TRUE(std::regex_match(line, m, sample)) << line;
    if (m.empty()) continue;
    size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

TEST(PromWriter, EscapesLabelsAndFormatsValues) {
  EXPECT_EQ(PromWriter::EscapeLabel("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  EXPECT_EQ(PromWriter::FormatValue(3), "3");
  EXPECT_EQ(PromWriter::FormatValue(1e15), "1000000000000000");
  EXPECT_EQ(PromWriter::FormatValue(0.005), "0.005");
  EXPECT_EQ(PromWriter::FormatValue(1.0 / 0.0), "+Inf");
  PromWriter w;
  w.Family("x_total", "counter", "help text");
  w.Sample("x_total", {{"route", "/v1/{a}\"\n"}}, 2);
  auto s = ParseExposition(w.text());
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s.begin()->second, 2);
}

TEST(Metrics, CountsRequestsBytesAndLatencyBuckets) {
  Metrics m;
  m.Observe({"GET", "/v1/models/{model}", 200, 0, 120, 0.003});
  m.Observe({"GET", "/v1/models/{model}", 200, 0, 80, 0.2});
  m.Observe({"BREW", "unmatched", 404, 5, 60, 100});  // unknown methods fold into OTHER
  PromWriter w;
  m.Render(&w);
  auto s = ParseExposition(w.text());
  EXPECT_EQ((s[R"(deltastore_http_requests_total{method="GET",route="/v1/models/{model}",status="200"})"]),
            2);
  EXPECT_EQ((s[R"(deltastore_http_requests_total{method="OTHER",route="unmatched",status="404"})"]), 1);
  EXPECT_EQ((s[R"(deltastore_http_response_body_bytes_total{method="GET",route="/v1/models/{model}"})"]),
            200);
  EXPECT_EQ((s[R"(deltastore_http_request_body_bytes_total{method="OTHER",route="unmatched"})"]), 5);
  const std::string b =
      R"(deltastore_http_request_duration_seconds_bucket{method="GET",route="/v1/models/{model}",le=)";
  EXPECT_EQ(s[b + "\"0.001\"}"], 0);
  EXPECT_EQ(s[b + "\"0.005\"}"], 1);
  EXPECT_EQ(s[b + "\"0.25\"}"], 2);
  EXPECT_EQ(s[b + "\"+Inf\"}"], 2);
  EXPECT_EQ((s[R"(deltastore_http_request_duration_seconds_count{method="OTHER",route="unmatched"})"]), 1);
  const std::string other =
      R"(deltastore_http_request_duration_seconds_bucket{method="OTHER",route="unmatched",le=)";
  EXPECT_EQ(s[other + "\"60\"}"], 0);  // over the last bound: only in +Inf
  EXPECT_EQ(s[other + "\"+Inf\"}"], 1);
}

TEST(Ui, EscapesEveryUserString) {
  AuditBuilder b;
  Manifest m;
  FileEntry f;
  f.path = "x";
  f.size = 10;
  f.chunks.push_back({Sha256::Of("c"), 10, 4});
  m.files.push_back(f);
  AuditVersionInfo info;
  info.model = "evil<script>";  // the registry refuses such names; the page must not trust that
  info.digest = Sha256::Of("v");
  info.mode = "lossless";
  info.tags = {"<img src=x onerror=1>"};
  info.created_at = "\"><u>x";
  b.Add(info, m);
  std::vector<nlohmann::json> history = {
      {{"at", "<i>"}, {"totals", {{"logical_bytes", 10}, {"stored_bytes", 4}}}}};
  std::string html = RenderUiPage(b.Finish("<now>", 4, 1), history);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<img"), std::string::npos);
  EXPECT_EQ(html.find("<i>"), std::string::npos);
  EXPECT_EQ(html.find("<u>"), std::string::npos);
  EXPECT_NE(html.find("evil&lt;script&gt;"), std::string::npos);
  EXPECT_NE(html.find("&lt;img src=x onerror=1&gt;"), std::string::npos);
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HtmlEscape("a&'\""), "a&amp;&#39;&quot;");
}

}  // namespace
}  // namespace deltastore::api
