#include "cpu/sample_tokens.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tandem::cpu {

double key_uniform(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

namespace {

struct Item {
  float logit;
  int32_t index;
  double weight;  // exp(x - top), unnormalised probability
};

// Strict total order of the nucleus: logit descending, then index ascending.
inline bool before(const Item& a, const Item& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.index < b.index);
}

// Top-p: in `before` order, a token stays while the mass before it (renormalised over `kept`) is below
// top_p. A weighted quickselect narrows [lo, hi) to the range holding the cut (expected linear time,
// where a full sort of a flat 150k-token row took milliseconds); only that range is sorted.
std::vector<int32_t> nucleus(const float* logits, double t, double top, const std::vector<int32_t>& kept,
                             float top_p) {
  std::vector<Item> items(kept.size());
  double total = 0.0;
  for (size_t j = 0; j < kept.size(); ++j) {
    const int32_t i = kept[j];
    items[j] = {logits[i], i, std::exp(logits[i] / t - top)};
    total += items[j].weight;
  }
  const double limit = top_p * total;
  size_t lo = 0, hi = items.size();
  double acc = 0.0;  // mass of items[0, lo), all in the nucleus
  while (hi - lo > 32) {
    // pivot: median of three by `before`; [lo, mid) = items strictly before it
    Item a = items[lo], b = items[lo + (hi - lo) / 2], c = items[hi - 1];
    if (before(b, a)) std::swap(a, b);
    if (before(c, b)) std::swap(b, c);
    if (before(b, a)) std::swap(a, b);
    const Item pivot = b;
    size_t mid = std::partition(items.begin() + lo, items.begin() + hi,
                                [&](const Item& x) { return before(x, pivot); }) - items.begin();
    if (mid == lo) {  // the pivot is the first of the range: it alone is the upper part
      auto first = std::find_if(items.begin() + lo, items.begin() + hi, [&](const Item& x) { return x.index == pivot.index; });
      std::iter_swap(items.begin() + lo, first);
      mid = lo + 1;
    }
    double upper = 0.0;
    for (size_t j = lo; j < mid; ++j) upper += items[j].weight;
    if (acc + upper >= limit) {
      hi = mid;  // the first item after the upper part is out; the cut is inside it
    } else {
      acc += upper;
      lo = mid;
    }
  }
  std::sort(items.begin() + lo, items.begin() + hi, before);
  size_t n = lo;
  for (; n < hi && acc < limit; ++n) acc += items[n].weight;
  std::vector<int32_t> out(std::max<size_t>(n, 1));
  for (size_t j = 0; j < out.size(); ++j) out[j] = items[j].index;
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace

static int64_t first_max(const float* logits, int64_t V) {
  int64_t best = 0;
  for (int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

std::vector<int32_t> kept_tokens(const float* logits, int64_t V, const SampleParams& p) {
  const int64_t best = first_max(logits, V);
  if (p.temperature == 0.0f) return {static_cast<int32_t>(best)};
  const double t = p.temperature, top = logits[best] / t;  // x = logit / T, in double
  std::vector<int32_t> kept;
  kept.reserve(static_cast<size_t>(V));
  if (p.top_k > 0 && p.top_k < V) {
    // keep the tokens >= the k-th largest (ties at the k-th all kept)
    std::vector<float> vals(logits, logits + V);
    std::nth_element(vals.begin(), vals.begin() + (p.top_k - 1), vals.end(), std::greater<float>());
    const float kth = vals[p.top_k - 1];
    for (int64_t i = 0; i < V; ++i)
      if (logits[i] >= kth) kept.push_back(static_cast<int32_t>(i));
  } else {
    for (int64_t i = 0; i < V; ++i)
      if (logits[i] != -INFINITY) kept.push_back(static_cast<int32_t>(i));
  }
  if (p.top_p < 1.0f && !kept.empty()) kept = nucleus(logits, t, top, kept, p.top_p);
  if (p.min_p > 0.0f) {
    const double floor = top + std::log(static_cast<double>(p.min_p));
    kept.erase(std::remove_if(kept.begin(), kept.end(), [&](int32_t i) { return logits[i] / t < floor; }),
               kept.end());
  }
  if (kept.empty()) kept.push_back(static_cast<int32_t>(best));  // every logit -inf: nothing else to draw
  return kept;
}

int32_t sample_row(const float* logits, int64_t V, const SampleParams& p) {
  const std::vector<int32_t> kept = kept_tokens(logits, V, p);
  if (kept.size() == 1) return kept[0];
  // the first maximum is always kept (top_k, the nucleus and min_p all keep it): no second pass over V
  float best = logits[kept[0]];
  for (int32_t i : kept) best = std::max(best, logits[i]);
  const double t = p.temperature, top = best / t;
  double total = 0.0;
  for (int32_t i : kept) total += std::exp(logits[i] / t - top);
  const double target = key_uniform(p.key_seed) * total;
  double acc = 0.0;
  for (int32_t i : kept) {
    acc += std::exp(logits[i] / t - top);
    if (acc > target) return i;
  }
  return kept.back();
}

} // namespace tandem::cpu
