// present: draws one generated frame into the letterboxed content rectangle of the target.
//
// The quad covers the viewport the presenter set to the content rectangle. Every output pixel is
// mapped through the timewarp homography u_warp (3x3, computed on the CPU: K R K^-1 with R the
// rotation from the player's current camera to the frame's camera; identity when timewarp is off)
// from output pixel coordinates to source pixel coordinates, both in the frame's pixel units with
// OpenCV's convention (pixel centres at integers, x right, y down, row 0 = top). The source is then
// sampled with Catmull-Rom bicubic (u_filter 2), bilinear (1) or nearest (0). Where the warp looks
// past the frame's edge the nearest edge colour is shown, increasingly blurred (coarser mip levels)
// the further out it is, never garbage. Colour is passed through untouched: the frames hold sRGB
// values, the texture and framebuffer are plain UNORM, so nothing converts them twice.

#if defined VERTEX_SHADER

in vec2 in_pos;  // quad corner in normalized device coordinates, [-1, 1]
out vec2 v_uv;   // (0, 0) = top-left of the content rectangle, (1, 1) = bottom-right

void main() {
    gl_Position = vec4(in_pos, 0.0, 1.0);
    v_uv = vec2(in_pos.x * 0.5 + 0.5, 0.5 - in_pos.y * 0.5);  // GL's y is up, images' y is down
}

#elif defined FRAGMENT_SHADER

uniform sampler2D u_image;  // (H, W) RGB, texel row 0 = the image's top row
uniform vec2 u_size;        // (W, H) of the frame in pixels
uniform mat3 u_warp;        // output pixel -> source pixel, column-major as GLSL reads it
uniform int u_filter;       // 0 nearest, 1 bilinear, 2 Catmull-Rom bicubic
uniform float u_max_lod;    // coarsest mip level used to blur what lies beyond the edges

in vec2 v_uv;
out vec4 f_color;

// Catmull-Rom with 9 bilinear taps instead of 16 point taps: the two middle weights of each axis
// are folded into one bilinear fetch. At a texel centre the weights are (0, 1, 0, 0), so a 1:1
// draw reproduces the frame exactly.
vec3 sample_catmull_rom(vec2 p) {  // p: continuous texel coordinates (texel i spans [i, i+1))
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
    vec3 c = vec3(0.0);
    c += textureLod(u_image, vec2(t0.x, t0.y), 0.0).rgb * w0.x * w0.y;
    c += textureLod(u_image, vec2(t12.x, t0.y), 0.0).rgb * w12.x * w0.y;
    c += textureLod(u_image, vec2(t3.x, t0.y), 0.0).rgb * w3.x * w0.y;
    c += textureLod(u_image, vec2(t0.x, t12.y), 0.0).rgb * w0.x * w12.y;
    c += textureLod(u_image, vec2(t12.x, t12.y), 0.0).rgb * w12.x * w12.y;
    c += textureLod(u_image, vec2(t3.x, t12.y), 0.0).rgb * w3.x * w12.y;
    c += textureLod(u_image, vec2(t0.x, t3.y), 0.0).rgb * w0.x * w3.y;
    c += textureLod(u_image, vec2(t12.x, t3.y), 0.0).rgb * w12.x * w3.y;
    c += textureLod(u_image, vec2(t3.x, t3.y), 0.0).rgb * w3.x * w3.y;
    return clamp(c, 0.0, 1.0);  // the negative lobes can overshoot at hard edges
}

vec3 sample_inside(vec2 p) {
    if (u_filter == 0) {
        ivec2 i = clamp(ivec2(floor(p)), ivec2(0), ivec2(u_size) - 1);
        return texelFetch(u_image, i, 0).rgb;
    }
    if (u_filter == 1) {
        return textureLod(u_image, p / u_size, 0.0).rgb;
    }
    return sample_catmull_rom(p);
}

void main() {
    vec2 out_px = v_uv * u_size - 0.5;          // output pixel, OpenCV convention
    vec3 q = u_warp * vec3(out_px, 1.0);
    vec2 p;                                      // source position in continuous texel coordinates
    if (q.z > 1e-6) {
        p = q.xy / q.z + 0.5;
    } else {
        // The ray points behind the frame's camera: show the far edge in that direction, fully blurred.
        p = u_size * 0.5 + normalize(q.xy + vec2(1e-6)) * 1e6;
    }
    // Distance (in source pixels) by which p lies outside the frame; 0 inside.
    vec2 outside = max(vec2(0.0), abs(p - 0.5 * u_size) - 0.5 * u_size);
    float d = length(outside);
    if (d <= 0.0) {
        f_color = vec4(sample_inside(p), 1.0);
    } else {
        // Beyond the edge: the edge colour, smeared wider with distance (a coarser mip level).
        vec2 edge = clamp(p, vec2(0.5), u_size - 0.5);
        float lod = min(log2(1.0 + d * 0.5), u_max_lod);
        vec3 c = textureLod(u_image, edge / u_size, lod).rgb;
        if (d < 1.0) {
            c = mix(sample_inside(edge), c, d);  // no seam where the frame ends
        }
        f_color = vec4(c, 1.0);
    }
}

#endif
