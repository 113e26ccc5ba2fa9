// present: draws one generated frame into the letterboxed content rectangle of the target.
//
// The quad covers the viewport the presenter set to the content rectangle. Every output pixel is
// mapped through the timewarp homography u_warp (3x3, computed on the CPU: K R K^-1 with R the
// rotation from the player's current camera to the frame's camera; identity when timewarp is off)
// from output pixel coordinates to source pixel coordinates, both in the frame's pixel units with
// OpenCV's convention (pixel centres at integers, x right, y down, row 0 = top). The source is then
// sampled with Catmull-Rom bicubic, bilinear or nearest (the FILTER define). Where the warp looks
// past the frame's edge the edge colour is shown, fading into a blurred version of it (a coarse
// mip level) the further out it is, never garbage. Colour is passed through untouched: the frames
// hold sRGB values, the texture and framebuffer are plain UNORM, so nothing converts them twice.

#if defined VERTEX_SHADER

in vec2 in_pos;  // quad corner in normalized device coordinates, [-1, 1]
out vec2 v_uv;   // (0, 0) = top-left of the content rectangle, (1, 1) = bottom-right

void main() {
    gl_Position = vec4(in_pos, 0.0, 1.0);
    v_uv = vec2(in_pos.x * 0.5 + 0.5, 0.5 - in_pos.y * 0.5);  // GL's y is up, images' y is down
}

#elif defined FRAGMENT_SHADER

// FILTER (a define chosen by the presenter, so no per-pixel branching on it):
// 0 nearest, 1 bilinear, 2 Catmull-Rom bicubic.
#ifndef FILTER
#define FILTER 2
#endif

uniform sampler2D u_image;  // (H, W) RGBA, texel row 0 = the image's top row, with mipmaps
uniform vec2 u_size;        // (W, H) of the frame in pixels
uniform mat3 u_warp;        // output pixel -> source pixel, column-major as GLSL reads it
uniform float u_blur_lod;   // mip level whose colours fill what lies beyond the frame's edges
uniform float u_blur_px;    // distance past the edge (source pixels) over which the fill fades in

in vec2 v_uv;
out vec4 f_color;

vec3 fetch(vec2 t) {  // t: normalized texture coordinates, base level, bilinear
    return textureLod(u_image, t, 0.0).rgb;
}

#if FILTER == 2
// Catmull-Rom in 5 bilinear taps (Jimenez 2016): the middle two weights of each axis fold into
// one bilinear fetch, and the four corner taps, whose weights are tiny, are dropped and the rest
// renormalized. At a texel centre the weights are (0, 1, 0, 0), so a 1:1 draw is exact.
vec3 sample_frame(vec2 p) {  // p: continuous texel coordinates (texel i spans [i, i+1))
    vec2 t1 = floor(p - 0.5) + 0.5;
    vec2 f = p - t1;
    vec2 w0 = f * (-0.5 + f * (1.0 - 0.5 * f));
    vec2 w1 = 1.0 + f * f * (-2.5 + 1.5 * f);
    vec2 w2 = f * (0.5 + f * (2.0 - 1.5 * f));
    vec2 w3 = f * f * (-0.5 + 0.5 * f);
    vec2 w12 = w1 + w2;
    vec2 t0 = (t1 - 1.0) / u_size;
    vec2 t3 = (t1 + 2.0) / u_size;
    vec2 t12 = (t1 + w2 / w12) / u_size;
    vec3 c = fetch(vec2(t12.x, t0.y)) * (w12.x * w0.y)
           + fetch(vec2(t0.x, t12.y)) * (w0.x * w12.y)
           + fetch(t12) * (w12.x * w12.y)
           + fetch(vec2(t3.x, t12.y)) * (w3.x * w12.y)
           + fetch(vec2(t12.x, t3.y)) * (w12.x * w3.y);
    float norm = w12.x * w0.y + w0.x * w12.y + w12.x * w12.y + w3.x * w12.y + w12.x * w3.y;
    return clamp(c / norm, 0.0, 1.0);  // the negative lobes can overshoot at hard edges
}
#elif FILTER == 1
vec3 sample_frame(vec2 p) {
    return fetch(p / u_size);
}
#else
vec3 sample_frame(vec2 p) {
    return texelFetch(u_image, clamp(ivec2(floor(p)), ivec2(0), ivec2(u_size) - 1), 0).rgb;
}
#endif

void main() {
    vec2 out_px = v_uv * u_size - 0.5;  // output pixel, OpenCV convention (centres at integers)
    vec3 q = u_warp * vec3(out_px, 1.0);
    // Source position in continuous texel coordinates. A ray behind the frame's camera (only
    // for turns near 90 degrees) is sent far out in its direction: the blurred edge fill.
    vec2 p = q.z > 1e-6 ? q.xy / q.z + 0.5 : u_size * 0.5 + normalize(q.xy + vec2(1e-6)) * 1e6;
    // Clamp to the outermost texel centres: inside, nothing changes; outside, the edge repeats.
    vec2 pc = clamp(p, vec2(0.5), u_size - 0.5);
    vec3 c = sample_frame(pc);
    float d = length(p - pc);  // how far past the edge, in source pixels; 0 inside
    if (d > 0.0) {
        // Smear the edge colours out: fade from the clamped edge to a coarse mip level's colours.
        vec3 blurred = textureLod(u_image, pc / u_size, u_blur_lod).rgb;
        c = mix(c, blurred, smoothstep(0.0, u_blur_px, d));
    }
    f_color = vec4(c, 1.0);
}

#endif
