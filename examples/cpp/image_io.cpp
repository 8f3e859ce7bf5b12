// PNG and JPEG reading, PNG writing (see image_io.h).
#include "image_io.h"

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <png.h>
#ifdef YOLOSEG_EXAMPLE_JPEG
#include <jpeglib.h>
#endif

namespace {

using File = std::unique_ptr<FILE, int (*)(FILE*)>;

File open(const std::string& path, const char* mode) {
  FILE* f = std::fopen(path.c_str(), mode);
  if (f == nullptr) throw std::runtime_error(path + ": cannot open (" + std::strerror(errno) + ")");
  return File(f, &std::fclose);
}

Image read_png(FILE* f, const std::string& path) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    throw std::runtime_error(path + ": out of memory");
  }
  Image img;
  std::vector<png_bytep> rows;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error(path + ": not a valid PNG file");
  }
  png_init_io(png, f);
  png_read_info(png, info);
  const png_byte color = png_get_color_type(png, info);
  if (png_get_bit_depth(png, info) == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) {
    png_set_tRNS_to_alpha(png);
    png_set_strip_alpha(png);
  }
  png_set_bgr(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  img.width = png_get_image_width(png, info);
  img.height = png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != static_cast<size_t>(3 * img.width)) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error(path + ": unsupported PNG layout");
  }
  img.bgr.resize(static_cast<size_t>(3 * img.width * img.height));
  rows.resize(static_cast<size_t>(img.height));
  for (int64_t y = 0; y < img.height; ++y) rows[y] = img.bgr.data() + 3 * img.width * y;
  png_read_image(png, rows.data());
  png_read_end(png, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return img;
}

#ifdef YOLOSEG_EXAMPLE_JPEG
struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void on_jpeg_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

Image read_jpeg(FILE* f, const std::string& path) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = on_jpeg_error;
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw std::runtime_error(path + ": not a valid JPEG file (" + err.message + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.num_components != 1 && cinfo.num_components != 3) {
    jpeg_destroy_decompress(&cinfo);
    throw std::runtime_error(path + ": CMYK JPEG files are not supported");
  }
  cinfo.out_color_space = JCS_EXT_BGR;  // libjpeg-turbo: decoded straight to BGR (gray replicated)
  jpeg_start_decompress(&cinfo);
  img.width = cinfo.output_width;
  img.height = cinfo.output_height;
  img.bgr.resize(static_cast<size_t>(3 * img.width * img.height));
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = img.bgr.data() + 3 * img.width * cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}
#endif

}  // namespace

Image read_image(const std::string& path) {
  File f = open(path, "rb");
  unsigned char magic[8] = {0};
  const size_t got = std::fread(magic, 1, sizeof(magic), f.get());
  std::rewind(f.get());
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) return read_png(f.get(), path);
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
#ifdef YOLOSEG_EXAMPLE_JPEG
    return read_jpeg(f.get(), path);
#else
    throw std::runtime_error(path + ": JPEG support was not built (libjpeg not found)");
#endif
  }
  throw std::runtime_error(path + ": not a PNG or JPEG image");
}

void write_png(const std::string& path, const Image& img) {
  const std::string tmp = path + ".tmp";
  {
    File f = open(tmp, "wb");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (info == nullptr) {
      png_destroy_write_struct(&png, nullptr);
      throw std::runtime_error(path + ": out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      std::remove(tmp.c_str());
      throw std::runtime_error(path + ": cannot write the PNG");
    }
    png_init_io(png, f.get());
    png_set_IHDR(png, info, static_cast<png_uint_32>(img.width), static_cast<png_uint_32>(img.height), 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_set_bgr(png);
    for (int64_t y = 0; y < img.height; ++y)
      png_write_row(png, const_cast<png_bytep>(img.bgr.data() + 3 * img.width * y));
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    if (std::fflush(f.get()) != 0) {
      std::remove(tmp.c_str());
      throw std::runtime_error(path + ": cannot write (" + std::strerror(errno) + ")");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write (" + std::strerror(errno) + ")");
  }
}
