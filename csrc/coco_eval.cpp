// COCO evaluation (see coco_eval.h): pycocotools' loading rules, per image/category IoU and greedy
// matching, and accumulation, on annotations read straight from the JSON text (coco_json.h).
#include "coco_eval.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string_view>
#include <unordered_map>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "coco_json.h"
#include "errors.h"
#include "rle.h"

// Built with -ffp-contract=off (CMakeLists.txt): bit-exact arithmetic with the COCO tools.

namespace yoloseg {
namespace coco {
namespace {

using Counts = rle::Counts;
constexpr size_t kParallelMin = 64;  // below this many work items, stay single-threaded

// ---------------------------------------------------------------------------------------------
// Evaluation state.
enum DetState : uint8_t { kIgnored = 0, kTP = 1, kFP = 2 };

struct Group {
  int cat = 0, img = 0;
  size_t gt_begin = 0, gt_end = 0;  // in gt_keys
  size_t dt_begin = 0, dt_end = 0;  // in dt_keys (file order within the group)
  size_t kept_off = 0, kept = 0;    // score-sorted detections kept (<= largest maxDets)
};

template <typename F>
void parallel_for(size_t n, int threads, F&& fn) {
#ifdef _OPENMP
  const int nt = clamp_threads(threads > 0 ? threads : omp_get_max_threads());
  if (nt > 1 && n > kParallelMin) {
    ParallelErrors errors;  // the first exception of any item, rethrown after the region
#pragma omp parallel for schedule(dynamic, 8) num_threads(nt)
    for (int64_t i = 0; i < static_cast<int64_t>(n); ++i) errors.run([&] { fn(static_cast<size_t>(i)); });
    errors.rethrow();
    return;
  }
#endif
  for (size_t i = 0; i < n; ++i) fn(i);
}

}  // namespace

Result evaluate(const char* gt_json, size_t gt_len, const char* dt_json, size_t dt_len,
                const Params& P) {
  const size_t T = P.iou_thrs.size(), R = P.rec_thrs.size(), A = P.area_lo.size(),
               M = P.max_dets.size();
  if (T == 0 || R == 0 || A == 0 || M == 0 || P.area_hi.size() != A)
    fail("evaluation parameters must not be empty");
  for (double v : P.iou_thrs)
    if (!(v >= 0.0 && v <= 1.0)) fail("coco_evaluate: iou_thrs must be numbers in [0, 1]");
  for (double v : P.rec_thrs)
    if (!(v >= 0.0 && v <= 1.0)) fail("coco_evaluate: rec_thrs must be numbers in [0, 1]");
  for (size_t a = 0; a < A; ++a)
    if (std::isnan(P.area_lo[a]) || std::isnan(P.area_hi[a])) fail("coco_evaluate: area_rng must not hold NaN");
  for (int64_t m : P.max_dets)
    if (m < 0) fail("coco_evaluate: max_dets must be >= 0");
  const size_t max_det = static_cast<size_t>(
      std::max<int64_t>(*std::max_element(P.max_dets.begin(), P.max_dets.end()), 0));

  GtFile gt;
  parse_gt(gt_json, gt_len, P.segm, gt);
  Store dt;
  parse_dt(dt_json, dt_len, P.segm, dt);

  Result res;
  // Images and categories: sorted unique ids; for a repeated image id the last entry counts.
  std::unordered_map<int64_t, int> img_index, cat_index;
  for (auto& im : gt.images) res.img_ids.push_back(im.id);
  std::sort(res.img_ids.begin(), res.img_ids.end());
  res.img_ids.erase(std::unique(res.img_ids.begin(), res.img_ids.end()), res.img_ids.end());
  img_index.reserve(res.img_ids.size() * 2);
  for (size_t i = 0; i < res.img_ids.size(); ++i) img_index[res.img_ids[i]] = static_cast<int>(i);
  std::vector<Image> images(res.img_ids.size());
  for (auto& im : gt.images) images[img_index[im.id]] = im;
  res.cat_ids = gt.cat_ids;
  std::sort(res.cat_ids.begin(), res.cat_ids.end());
  res.cat_ids.erase(std::unique(res.cat_ids.begin(), res.cat_ids.end()), res.cat_ids.end());
  for (size_t k = 0; k < res.cat_ids.size(); ++k) cat_index[res.cat_ids[k]] = static_cast<int>(k);
  const size_t I = res.img_ids.size(), K = res.cat_ids.size();
  auto find = [](const std::unordered_map<int64_t, int>& m, int64_t id) {
    auto it = m.find(id);
    return it == m.end() ? -1 : it->second;
  };

  // Ground truth in pycocotools' order: images ascending, file order within an image; an id that
  // occurs twice resolves to its last annotation (COCO.loadAnns).
  std::vector<Ann>& ga = gt.store.anns;
  std::vector<std::pair<int64_t, size_t>> gt_keys;  // (category * I + image, annotation)
  {
    std::unordered_map<int64_t, size_t> by_id;
    by_id.reserve(ga.size() * 2);
    for (size_t i = 0; i < ga.size(); ++i) {
      if (!ga[i].has_id) fail("gt: annotation number " + std::to_string(i) + " has no 'id'");
      by_id[ga[i].id] = i;
    }
    const bool unique = by_id.size() == ga.size();
    std::vector<std::pair<int, size_t>> seq;
    for (size_t i = 0; i < ga.size(); ++i) {
      if (!ga[i].has_image || !ga[i].has_cat)
        fail("gt: annotation " + std::to_string(ga[i].id) + " lacks image_id or category_id");
      const int ii = find(img_index, ga[i].image_id);
      if (ii >= 0 && find(cat_index, ga[i].category_id) >= 0) seq.emplace_back(ii, i);
    }
    std::stable_sort(seq.begin(), seq.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [ii, i] : seq) {
      const size_t r = unique ? i : by_id[ga[i].id];
      const int ri = find(img_index, ga[r].image_id), rk = find(cat_index, ga[r].category_id);
      if (ri < 0 || rk < 0) continue;
      const Ann& g = ga[r];
      if (!g.has_area) fail("gt: annotation " + std::to_string(g.id) + " has no 'area'");
      if (!P.segm && g.bbox_len != 4)
        fail("gt: annotation " + std::to_string(g.id) + " needs a 'bbox' of 4 numbers");
      if (P.segm && g.seg == kSegNone)
        fail("gt: annotation " + std::to_string(g.id) + " has no 'segmentation'");
      gt_keys.emplace_back(static_cast<int64_t>(rk) * static_cast<int64_t>(I) + ri, r);
    }
    std::stable_sort(gt_keys.begin(), gt_keys.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
  }

  // Detections: COCO.loadRes rules, decided by the first result. Ids become 1..N in file order.
  std::vector<Ann>& da = dt.anns;
  bool box_branch = true;
  if (!da.empty()) {
    const Ann& d0 = da[0];
    if (d0.has_caption) fail("dt: caption results cannot be evaluated");
    if (d0.bbox_len > 0)
      box_branch = true;
    else if (d0.seg != kSegNone)
      box_branch = false;
    else
      fail("dt: results need a 'bbox' or a 'segmentation'");
  }
  std::vector<std::pair<int64_t, size_t>> dt_keys;
  dt_keys.reserve(da.size());
  for (size_t i = 0; i < da.size(); ++i) {
    Ann& d = da[i];
    auto which = [i]() { return "dt: result " + std::to_string(i); };
    if (!d.has_image || !d.has_cat) fail(which() + " lacks image_id or category_id");
    const int ii = find(img_index, d.image_id);
    if (ii < 0)
      fail(which() + " has image_id " + std::to_string(d.image_id) + ", which is not in gt images");
    if (!d.has_score || std::isnan(d.score)) fail(which() + " has no score or a NaN score");
    if (box_branch || d.bbox_len >= 0) {
      if (d.bbox_len != 4) fail(which() + " needs a 'bbox' of 4 numbers");
      for (double v : d.bbox)
        if (!std::isfinite(v)) fail(which() + " has a non-finite bbox");
    }
    d.id = static_cast<int64_t>(i) + 1;
    d.iscrowd = 0;
    const int kk = find(cat_index, d.category_id);
    if (kk < 0) continue;
    if (box_branch) {
      d.area = d.bbox[2] * d.bbox[3];
      if (P.segm && d.seg == kSegNone) {
        // loadRes gives box results a 4-corner polygon.
        const double x1 = d.bbox[0], x2 = d.bbox[0] + d.bbox[2], y1 = d.bbox[1],
                     y2 = d.bbox[1] + d.bbox[3];
        const double xy[8] = {x1, y1, x1, y2, x2, y2, x2, y1};
        d.seg = kSegPolys;
        d.seg_begin = dt.polys.size();
        dt.polys.emplace_back(dt.coords.size(), 8);
        dt.coords.insert(dt.coords.end(), xy, xy + 8);
        d.seg_end = dt.polys.size();
      }
    } else if (d.seg == kSegNone) {
      fail(which() + " has no 'segmentation'");
    }
    dt_keys.emplace_back(static_cast<int64_t>(kk) * static_cast<int64_t>(I) + ii, i);
  }
  std::stable_sort(dt_keys.begin(), dt_keys.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  res.num_gt = gt_keys.size();
  res.num_dt = dt_keys.size();

  // Polygons need their image's size and sane coordinates; check before the parallel part.
  const bool need_dmask = P.segm || !box_branch;
  auto check_polys = [&](const Ann& a, const Store& st, const char* who) {
    if (a.seg != kSegPolys) return;
    const Image& im = images[img_index[a.image_id]];
    if (!im.has_size || !(im.h >= 0 && im.h < 1e9) || !(im.w >= 0 && im.w < 1e9))
      fail(std::string(who) + ": image " + std::to_string(a.image_id) +
           " needs 'height' and 'width' to rasterise polygons");
    for (size_t p = a.seg_begin; p < a.seg_end; ++p)
      for (size_t j = 0; j < st.polys[p].second; ++j) {
        const double v = st.coords[st.polys[p].first + j];
        if (!std::isfinite(v) || std::fabs(v) > 1e8)
          fail(std::string(who) + ": annotation " + std::to_string(a.id) +
               " has polygon coordinates that are not finite numbers below 1e8");
      }
  };
  if (P.segm)
    for (auto& kv : gt_keys) check_polys(ga[kv.second], gt.store, "gt");
  if (need_dmask)
    for (auto& kv : dt_keys) check_polys(da[kv.second], dt, "dt");

  // Groups: one per (category, image) with ground truth or detections, ordered by category, image.
  std::vector<Group> groups;
  {
    size_t gi = 0, di = 0, off = 0;
    while (gi < gt_keys.size() || di < dt_keys.size()) {
      int64_t key = std::numeric_limits<int64_t>::max();
      if (gi < gt_keys.size()) key = gt_keys[gi].first;
      if (di < dt_keys.size()) key = std::min(key, dt_keys[di].first);
      Group g;
      g.cat = static_cast<int>(key / static_cast<int64_t>(I));
      g.img = static_cast<int>(key % static_cast<int64_t>(I));
      g.gt_begin = gi;
      while (gi < gt_keys.size() && gt_keys[gi].first == key) ++gi;
      g.gt_end = gi;
      g.dt_begin = di;
      while (di < dt_keys.size() && dt_keys[di].first == key) ++di;
      g.dt_end = di;
      g.kept = std::min(g.dt_end - g.dt_begin, max_det);
      g.kept_off = off;
      off += g.kept;
      groups.push_back(g);
    }
  }
  const size_t total_kept = groups.empty() ? 0 : groups.back().kept_off + groups.back().kept;
  std::vector<double> kept_scores(total_kept);
  std::vector<uint8_t> states(total_kept * A * T);  // per group: [A][T][kept]
  std::vector<int64_t> npig(groups.size() * A, 0);

  // evaluateImg for every group and area range (at the largest maxDets).
  const int threads = P.num_threads;
  parallel_for(groups.size(), threads, [&](size_t gidx) {
    const Group& g = groups[gidx];
    const size_t nd = g.dt_end - g.dt_begin, G = g.gt_end - g.gt_begin, D = g.kept;
    const Image& im = images[g.img];
    const uint64_t ih = static_cast<uint64_t>(im.h), iw = static_cast<uint64_t>(im.w);
    std::vector<size_t> order(nd);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      return da[dt_keys[g.dt_begin + a].second].score > da[dt_keys[g.dt_begin + b].second].score;
    });
    std::vector<Counts> scratch;
    // Detections kept: area (box area, or mask area for mask-only results), box, mask.
    std::vector<const Ann*> dts(D);
    std::vector<double> darea(D), dbox(4 * D), dmbox(need_dmask && P.segm ? 4 * D : 0);
    std::vector<Counts> dcounts(need_dmask ? D : 0);
    std::vector<rle::View> dview(need_dmask ? D : 0);
    for (size_t j = 0; j < D; ++j) {
      const Ann& d = da[dt_keys[g.dt_begin + order[j]].second];
      dts[j] = &d;
      kept_scores[g.kept_off + j] = d.score;
      darea[j] = d.area;
      std::copy(d.bbox, d.bbox + 4, &dbox[4 * j]);
      if (need_dmask) {
        dview[j] = mask_of(d, dt, ih, iw, dcounts[j], scratch);
        double bb[4];
        rle::to_bbox(dview[j], bb);
        if (P.segm) std::copy(bb, bb + 4, &dmbox[4 * j]);
        if (!box_branch) {
          darea[j] = static_cast<double>(rle::area(dview[j]));
          if (d.bbox_len < 0) std::copy(bb, bb + 4, &dbox[4 * j]);
        }
      }
    }
    std::vector<const Ann*> gts(G);
    std::vector<uint8_t> crowd(G), ignore(G);
    std::vector<Counts> gcounts(P.segm ? G : 0);
    std::vector<rle::View> gview(P.segm ? G : 0);
    std::vector<double> gmbox(P.segm ? 4 * G : 0);
    for (size_t j = 0; j < G; ++j) {
      gts[j] = &ga[gt_keys[g.gt_begin + j].second];
      crowd[j] = static_cast<int64_t>(gts[j]->iscrowd) != 0;
      ignore[j] = gts[j]->iscrowd != 0;
      if (P.segm && D > 0) {
        gview[j] = mask_of(*gts[j], gt.store, ih, iw, gcounts[j], scratch);
        rle::to_bbox(gview[j], &gmbox[4 * j]);
      }
    }
    // IoU (D x G), as computeIoU.
    std::vector<double> iou(D * G);
    for (size_t d = 0; d < D; ++d)
      for (size_t j = 0; j < G; ++j)
        iou[d * G + j] = P.segm ? rle::mask_iou(dview[d], gview[j], &dmbox[4 * d], &gmbox[4 * j],
                                                crowd[j])
                                : rle::box_iou(&dbox[4 * d], gts[j]->bbox, crowd[j]);
    std::vector<size_t> gorder(G);
    std::vector<uint8_t> gig(G), gmatched(G);
    uint8_t* st = states.data() + g.kept_off * A * T;
    for (size_t a = 0; a < A; ++a) {
      const double lo = P.area_lo[a], hi = P.area_hi[a];
      // Ground truth: ignored ones (crowd or out of range) last, stable.
      size_t n0 = 0;
      for (size_t j = 0; j < G; ++j)
        if (!(ignore[j] || gts[j]->area < lo || gts[j]->area > hi)) gorder[n0++] = j;
      npig[gidx * A + a] = static_cast<int64_t>(n0);
      size_t n1 = n0;
      for (size_t j = 0; j < G; ++j)
        if (ignore[j] || gts[j]->area < lo || gts[j]->area > hi) gorder[n1++] = j;
      for (size_t j = 0; j < G; ++j) gig[j] = j >= n0;
      for (size_t t = 0; t < T; ++t) {
        uint8_t* s = st + (a * T + t) * D;
        std::fill(gmatched.begin(), gmatched.end(), uint8_t{0});
        const double thr = std::min(P.iou_thrs[t], 1 - 1e-10);
        for (size_t d = 0; d < D; ++d) {
          double best = thr;
          ptrdiff_t m = -1;
          const double* row = iou.data() + d * G;
          for (size_t j = 0; j < G; ++j) {
            const size_t gj = gorder[j];
            if (gmatched[j] && !crowd[gj]) continue;
            if (m > -1 && !gig[m] && gig[j]) break;
            if (row[gj] < best) continue;
            best = row[gj];
            m = static_cast<ptrdiff_t>(j);
          }
          const bool out_of_range = darea[d] < lo || darea[d] > hi;
          if (m == -1) {
            s[d] = out_of_range ? kIgnored : kFP;
            continue;
          }
          gmatched[m] = 1;
          if (gig[m])
            s[d] = kIgnored;
          else if (gts[gorder[m]]->id != 0)
            s[d] = kTP;
          else  // a match to ground-truth id 0 reads as unmatched
            s[d] = out_of_range ? kIgnored : kFP;
        }
      }
    }
  });

  // accumulate: per category, merge the images' detections by score (stable: image order, then
  // rank within the image), then precision/recall per IoU threshold and area range.
  res.precision.assign(T * R * K * A * M, -1.0);
  res.recall.assign(T * K * A * M, -1.0);
  res.scores.assign(T * R * K * A * M, -1.0);
  std::vector<size_t> cat_begin(K + 1);
  for (size_t k = 0; k <= K; ++k)
    cat_begin[k] = static_cast<size_t>(
        std::lower_bound(groups.begin(), groups.end(), static_cast<int>(k),
                         [](const Group& g, int c) { return g.cat < c; }) -
        groups.begin());
  const double eps = std::nextafter(1.0, 2.0) - 1.0;  // np.spacing(1)

  struct Entry {
    double score;
    uint32_t group, rank;
  };
  auto accumulate_cat = [&](size_t k) {
    const size_t gb = cat_begin[k], ge = cat_begin[k + 1];
    if (gb == ge) return;
    std::vector<Entry> ents;
    std::vector<uint8_t> dense;  // [A*T][nd] states in merged order
    std::vector<size_t> tp_pos;  // positions of true positives
    std::vector<double> tp_pr, tp_rc;
    for (size_t mi = 0; mi < M; ++mi) {
      const size_t cap = static_cast<size_t>(std::max<int64_t>(P.max_dets[mi], 0));
      ents.clear();
      for (size_t gi = gb; gi < ge; ++gi) {
        const Group& g = groups[gi];
        for (size_t d = 0; d < std::min(cap, g.kept); ++d)
          ents.push_back(Entry{kept_scores[g.kept_off + d], static_cast<uint32_t>(gi),
                               static_cast<uint32_t>(d)});
      }
      std::stable_sort(ents.begin(), ents.end(),
                       [](const Entry& a, const Entry& b) { return a.score > b.score; });
      const size_t nd = ents.size();
      dense.resize(A * T * nd);
      for (size_t i = 0; i < nd; ++i) {
        const Group& g = groups[ents[i].group];
        const uint8_t* src = states.data() + g.kept_off * A * T + ents[i].rank;
        for (size_t at = 0; at < A * T; ++at) dense[at * nd + i] = src[at * g.kept];
      }
      for (size_t a = 0; a < A; ++a) {
        int64_t np_ = 0;
        for (size_t gi = gb; gi < ge; ++gi) np_ += npig[gi * A + a];
        if (np_ == 0) continue;
        const double npd = static_cast<double>(np_);
        for (size_t t = 0; t < T; ++t) {
          // Precision only changes upward at true positives: the running max from the right
          // at any position equals the max over that position and the true positives after it.
          const uint8_t* s = dense.data() + (a * T + t) * nd;
          tp_pos.clear();
          tp_pr.clear();
          tp_rc.clear();
          double tp = 0, fp = 0;
          double pr0 = 0;
          for (size_t i = 0; i < nd; ++i) {
            const uint8_t v = s[i];
            if (v == kTP) {
              tp += 1;
              tp_pos.push_back(i);
              tp_pr.push_back(tp / (fp + tp + eps));
              tp_rc.push_back(tp / npd);
            } else if (v == kFP) {
              fp += 1;
            }
            if (i == 0) pr0 = tp / (fp + tp + eps);
          }
          const size_t rk = ((t * K + k) * A + a) * M + mi;
          res.recall[rk] = nd ? tp / npd : 0;
          const size_t ntp = tp_pos.size();
          for (size_t i = ntp; i-- > 1;)
            if (tp_pr[i] > tp_pr[i - 1]) tp_pr[i - 1] = tp_pr[i];
          // searchsorted(rc, thr, 'left'): the first position with rc >= thr. rc is 0 before the
          // first true positive and steps up exactly at true positives.
          size_t j = 0;
          for (size_t r = 0; r < R; ++r) {
            const double thr = P.rec_thrs[r];
            const size_t pk = (((t * R + r) * K + k) * A + a) * M + mi;
            double q = 0, sc = 0;
            if (nd > 0 && thr <= 0) {
              // position 0 (rc[0] >= 0 >= thr)
              q = pr0;
              if (ntp) q = std::max(q, tp_pr[0]);
              sc = ents[0].score;
            } else {
              while (j < ntp && tp_rc[j] < thr) ++j;
              if (j < ntp) {
                q = tp_pr[j];
                sc = ents[tp_pos[j]].score;
              }
            }
            res.precision[pk] = q;
            res.scores[pk] = sc;
          }
        }
      }
    }
  };
  parallel_for(K, threads, accumulate_cat);
  return res;
}

}  // namespace coco
}  // namespace yoloseg

