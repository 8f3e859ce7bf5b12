// Image files for the predict example: PNG (libpng) and JPEG (libjpeg) in, PNG out, as 8-bit BGR like
// cv2.imread(path, IMREAD_COLOR): gray is replicated, alpha dropped, 16-bit reduced to 8. EXIF orientation is
// not applied (cv2.imread rotates JPEGs that carry it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

struct Image {
  int64_t height = 0, width = 0;
  std::vector<uint8_t> bgr;  // height x width x 3, rows 3 * width bytes apart
};

// Throws std::runtime_error naming the file when it cannot be read or is not a PNG/JPEG image.
Image read_image(const std::string& path);

// Writes a PNG through a temporary file renamed into place; throws std::runtime_error on failure.
void write_png(const std::string& path, const Image& img);
