/* model/input_norm.h — the ImageNet per-channel mean and std (RGB, of pixel values in
 * [0, 1]; torchvision's values) used by every backend's input normalisation:
 * x = (pixel - 255*mean) / (255*std). Plain macros so C and CUDA share them. */
#ifndef MODEL_INPUT_NORM_H
#define MODEL_INPUT_NORM_H

#define MODEL_MEAN_R 0.485
#define MODEL_MEAN_G 0.456
#define MODEL_MEAN_B 0.406
#define MODEL_STD_R 0.229
#define MODEL_STD_G 0.224
#define MODEL_STD_B 0.225

#endif
